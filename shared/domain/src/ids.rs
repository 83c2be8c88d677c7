//! Value types parsed once at the API boundary. Each carries its invariant
//! (alphabet, length, range), so the deciders never see an invalid one.

use std::fmt;

use serde::{Deserialize, Serialize};
use tally_core::id::{IdError, validate_id};

/// Longest entity id the API accepts.
pub const ENTITY_ID_MAX_LEN: usize = 64;

macro_rules! entity_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses 1–64 characters of `[A-Za-z0-9_-]`.
            pub fn parse(raw: impl Into<String>) -> Result<Self, IdError> {
                let raw = raw.into();
                validate_id(&raw, ENTITY_ID_MAX_LEN)?;
                Ok(Self(raw))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

entity_id!(
    /// A stock-keeping unit: one inventory stream per SKU.
    Sku
);
entity_id!(
    /// An order's id: one order stream per order.
    OrderId
);
entity_id!(
    /// A customer's id.
    CustomerId
);

/// Largest quantity one command may move: beyond it is a client mistake, not
/// a business (and it keeps every sum far from overflow).
pub const QUANTITY_MAX: u32 = 1_000_000;

/// A positive, bounded number of units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u32")]
pub struct Quantity(u32);

/// Why a number is not an acceptable quantity or amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// Below the minimum.
    #[error("must be at least {min}")]
    TooSmall {
        /// The minimum.
        min: u64,
    },
    /// Above the maximum.
    #[error("must be at most {max}")]
    TooLarge {
        /// The maximum.
        max: u64,
    },
}

impl Quantity {
    /// Parses `1..=QUANTITY_MAX`.
    pub fn new(value: u64) -> Result<Self, RangeError> {
        match value {
            0 => Err(RangeError::TooSmall { min: 1 }),
            v if v > u64::from(QUANTITY_MAX) => Err(RangeError::TooLarge {
                max: u64::from(QUANTITY_MAX),
            }),
            v => Ok(Self(v as u32)),
        }
    }

    /// The number of units.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u64> for Quantity {
    type Error = RangeError;
    fn try_from(value: u64) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Quantity> for u32 {
    fn from(value: Quantity) -> Self {
        value.0
    }
}

/// Largest unit price, in cents (ten million in the currency's unit).
pub const UNIT_PRICE_MAX_CENTS: u64 = 1_000_000_000;

/// A unit price in integer cents, `0..=UNIT_PRICE_MAX_CENTS`. Money is never `f64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Cents(u64);

impl Cents {
    /// Parses `0..=UNIT_PRICE_MAX_CENTS`.
    pub fn new(value: u64) -> Result<Self, RangeError> {
        if value > UNIT_PRICE_MAX_CENTS {
            return Err(RangeError::TooLarge {
                max: UNIT_PRICE_MAX_CENTS,
            });
        }
        Ok(Self(value))
    }

    /// The amount in cents.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for Cents {
    type Error = RangeError;
    fn try_from(value: u64) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Cents> for u64 {
    fn from(value: Cents) -> Self {
        value.0
    }
}

/// Longest product name accepted.
pub const PRODUCT_NAME_MAX_LEN: usize = 200;

/// A product's display name: 1–200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(try_from = "String", into = "String")]
pub struct ProductName(String);

/// Why a text field is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// Empty or only white space.
    #[error("must not be blank")]
    Blank,
    /// Too long.
    #[error("must be at most {max} characters")]
    TooLong {
        /// The maximum.
        max: usize,
    },
    /// Holds control characters.
    #[error("must not contain control characters")]
    ControlCharacter,
    /// Not in the expected format.
    #[error("{0}")]
    Format(&'static str),
}

/// Checks free text: not blank, at most `max` characters, no control characters.
pub fn validate_text(raw: &str, max: usize) -> Result<(), TextError> {
    if raw.trim().is_empty() {
        return Err(TextError::Blank);
    }
    if raw.chars().count() > max {
        return Err(TextError::TooLong { max });
    }
    if raw.chars().any(char::is_control) {
        return Err(TextError::ControlCharacter);
    }
    Ok(())
}

impl ProductName {
    /// Parses a product name.
    pub fn parse(raw: impl Into<String>) -> Result<Self, TextError> {
        let raw = raw.into();
        validate_text(&raw, PRODUCT_NAME_MAX_LEN)?;
        Ok(Self(raw))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ProductName {
    type Error = TextError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<ProductName> for String {
    fn from(value: ProductName) -> Self {
        value.0
    }
}

/// An ISO 4217 currency code: three upper-case ASCII letters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl Currency {
    /// The currency orders were implicitly priced in before orders carried one.
    pub fn usd() -> Self {
        Self("USD".to_owned())
    }

    /// Parses three upper-case ASCII letters.
    pub fn parse(raw: impl Into<String>) -> Result<Self, TextError> {
        let raw = raw.into();
        if raw.len() != 3 || !raw.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(TextError::Format("must be three upper-case letters, e.g. USD"));
        }
        Ok(Self(raw))
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Currency {
    fn default() -> Self {
        Self::usd()
    }
}

impl TryFrom<String> for Currency {
    type Error = TextError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_positive_and_bounded() {
        assert!(Quantity::new(0).is_err());
        assert_eq!(Quantity::new(1).map(Quantity::get), Ok(1));
        assert!(Quantity::new(u64::from(QUANTITY_MAX) + 1).is_err());
        assert!(serde_json::from_str::<Quantity>("-1").is_err());
        assert!(serde_json::from_str::<Quantity>("1.5").is_err());
    }

    #[test]
    fn ids_and_text_are_checked() {
        assert!(Sku::parse("SKU-1").is_ok());
        assert!(Sku::parse("x".repeat(65)).is_err());
        assert!(Sku::parse("a/b").is_err());
        assert!(ProductName::parse("  ").is_err());
        assert!(ProductName::parse("bad\u{0}name").is_err());
        assert!(Currency::parse("usd").is_err());
        assert!(Currency::parse("EUR").is_ok());
    }
}
