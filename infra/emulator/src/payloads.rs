//! The sample invocation payloads under `events/<function>/`, as the
//! handler tests (and `make invoke-local`) feed them to the functions.

use std::path::PathBuf;

use serde::de::DeserializeOwned;

/// `events/<function>/`.
pub fn payload_dir(function: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../events")
        .join(function)
}

/// Every `*.json` payload of `function`, by file stem, in name order.
///
/// # Panics
/// If the folder or a file cannot be read: the samples are part of the repository.
pub fn payload_files(function: &str) -> Vec<(String, String)> {
    let dir = payload_dir(function);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (name, text)
        })
        .collect()
}

/// The payload `events/<function>/<name>`, parsed as `T`.
///
/// # Panics
/// If it cannot be read or is not a `T`.
pub fn payload<T: DeserializeOwned>(function: &str, name: &str) -> T {
    let path = payload_dir(function).join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not the expected event: {e}", path.display()))
}
