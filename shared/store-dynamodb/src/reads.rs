//! The query port over the DynamoDB read tables: what the query Lambda reads.
//!
//! `inventory_levels` is written inline with the SKU's events, so a
//! consistent `GetItem` reads one's own writes; `order_summary` and
//! `sales_by_day` are eventual (the API's `min_version` covers the gap).
//! A customer's orders come from the `by_customer` index, newest first, a
//! page at a time; the cursor is the last row's `placed_at_ms.order_id`,
//! the same shape the SQLite store issues.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use chrono::NaiveDate;
use tally_domain::views::{InventoryLevel, OrderSummary, Page, ReadError, ReadModels, SalesDay};
use tally_domain::{CustomerId, OrderId, Sku};

use crate::generations::{LiveSlot, SlotTables};
use crate::items::Item;
use crate::projections::placed_key;
use crate::schema::{BATCH_GET_MAX_KEYS, BY_CUSTOMER_INDEX, CUSTOMER_ID, ENV_INVENTORY_TABLE, PLACED_KEY, READ_PK};
use crate::settings::{MissingSetting, Settings};

fn backend<E: std::error::Error + Send + Sync + 'static>(error: E) -> ReadError {
    ReadError::Backend(Box::new(error))
}

/// The read tables the query API reads.
#[derive(Debug, Clone)]
pub struct ReadTables {
    /// `inventory_levels` (inline).
    pub inventory: String,
    /// `order_summary`'s two slots (with the `by_customer` index).
    pub order_summary: SlotTables,
    /// `sales_by_day`'s two slots.
    pub sales_by_day: SlotTables,
}

impl ReadTables {
    /// Table names from `TALLY_INVENTORY_TABLE`, the eventual projections'
    /// blue and green tables and `TALLY_CHECKPOINTS_TABLE` (their generation items).
    pub fn from_settings(settings: &impl Settings) -> Result<Self, MissingSetting> {
        Ok(Self {
            inventory: settings.require(ENV_INVENTORY_TABLE)?,
            order_summary: SlotTables::order_summary(settings)?,
            sales_by_day: SlotTables::sales_by_day(settings)?,
        })
    }
}

/// The read models on DynamoDB. The eventual ones are read from their live
/// slot, as the generation item names it (kept for a second).
#[derive(Debug, Clone)]
pub struct DynamoReadModels {
    client: Client,
    inventory: String,
    order_summary: LiveSlot,
    sales_by_day: LiveSlot,
}

impl DynamoReadModels {
    /// Read models in `tables`.
    pub fn new(client: Client, tables: ReadTables) -> Self {
        Self {
            order_summary: LiveSlot::new(client.clone(), tables.order_summary),
            sales_by_day: LiveSlot::new(client.clone(), tables.sales_by_day),
            inventory: tables.inventory,
            client,
        }
    }

    async fn get(&self, table: &str, key: &str) -> Result<Option<Item>, ReadError> {
        let found = self
            .client
            .get_item()
            .table_name(table)
            .key(READ_PK, AttributeValue::S(key.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        Ok(found.item)
    }
}

/// A numeric attribute (absent: zero). Generic so a day's revenue, beyond
/// an i64, parses exactly into an i128.
fn number<T: std::str::FromStr + Default>(item: &Item, name: &str) -> Result<T, ReadError> {
    match item.get(name) {
        Some(AttributeValue::N(n)) => n
            .parse()
            .map_err(|_| ReadError::Backend(format!("{name} = {n:?} is not an integer").into())),
        None => Ok(T::default()),
        Some(other) => Err(ReadError::Backend(format!("{name} is not a number: {other:?}").into())),
    }
}

/// A summary row, or `None` for an item that only holds a checkpoint.
fn summary(item: Item) -> Result<Option<OrderSummary>, ReadError> {
    if !item.contains_key(CUSTOMER_ID) {
        return Ok(None);
    }
    serde_dynamo::from_item(item).map(Some).map_err(backend)
}

/// `placed_at_ms.order_id` → the index key to start after.
fn cursor_key(customer: &CustomerId, cursor: &str) -> Result<Item, ReadError> {
    let (ms, id) = cursor.split_once('.').ok_or(ReadError::InvalidCursor)?;
    let ms: i64 = ms.parse().map_err(|_| ReadError::InvalidCursor)?;
    let id = OrderId::parse(id).map_err(|_| ReadError::InvalidCursor)?;
    Ok(Item::from([
        (READ_PK.to_owned(), AttributeValue::S(id.as_str().to_owned())),
        (CUSTOMER_ID.to_owned(), AttributeValue::S(customer.as_str().to_owned())),
        (PLACED_KEY.to_owned(), AttributeValue::S(placed_key(ms, id.as_str()))),
    ]))
}

#[async_trait]
impl ReadModels for DynamoReadModels {
    async fn inventory_level(&self, sku: &Sku) -> Result<Option<InventoryLevel>, ReadError> {
        self.get(&self.inventory, sku.as_str())
            .await?
            .map(|item| serde_dynamo::from_item(item).map_err(backend))
            .transpose()
    }

    async fn order_summary(&self, order_id: &OrderId) -> Result<Option<OrderSummary>, ReadError> {
        let table = self.order_summary.table().await.map_err(backend)?;
        match self.get(&table, order_id.as_str()).await? {
            Some(item) => summary(item),
            None => Ok(None),
        }
    }

    async fn orders_by_customer(
        &self,
        customer_id: &CustomerId,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<OrderSummary>, ReadError> {
        let limit = limit.clamp(1, 100) as usize;
        let mut start = cursor.map(|c| cursor_key(customer_id, c)).transpose()?;
        let table = self.order_summary.table().await.map_err(backend)?;
        let mut items = Vec::with_capacity(limit + 1);
        // One more than a page tells whether another page follows; a query
        // page may also end early at 1 MB, so keep going until we have it.
        loop {
            let page = self
                .client
                .query()
                .table_name(&table)
                .index_name(BY_CUSTOMER_INDEX)
                .key_condition_expression("#c = :c")
                .expression_attribute_names("#c", CUSTOMER_ID)
                .expression_attribute_values(":c", AttributeValue::S(customer_id.as_str().to_owned()))
                .scan_index_forward(false)
                .limit(i32::try_from(limit + 1 - items.len()).unwrap_or(101))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(backend)?;
            for item in page.items.unwrap_or_default() {
                if let Some(row) = summary(item)? {
                    items.push(row);
                }
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() && items.len() <= limit => start = Some(key),
                _ => break,
            }
        }
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|row| format!("{}.{}", row.placed_at_ms, row.order_id))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn sales_by_day(&self, from: NaiveDate, to: NaiveDate) -> Result<Vec<SalesDay>, ReadError> {
        let days: Vec<String> = from
            .iter_days()
            .take_while(|d| *d <= to)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .collect();
        let table = self.sales_by_day.table().await.map_err(backend)?;
        let mut found = Vec::new();
        for chunk in days.chunks(BATCH_GET_MAX_KEYS) {
            let keys: Vec<Item> = chunk
                .iter()
                .map(|day| Item::from([(READ_PK.to_owned(), AttributeValue::S(day.clone()))]))
                .collect();
            let mut request = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(backend)?,
            );
            // BatchGetItem may return part of the keys as unprocessed: ask again.
            while let Some(keys) = request.take() {
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&table, keys)
                    .send()
                    .await
                    .map_err(backend)?;
                for item in out.responses.unwrap_or_default().into_values().flatten() {
                    let Some(AttributeValue::S(day)) = item.get(READ_PK) else {
                        continue;
                    };
                    found.push(SalesDay {
                        day: day.clone(),
                        orders: number(&item, "orders")?,
                        units: number(&item, "units")?,
                        revenue_cents: number(&item, "revenue_cents")?,
                    });
                }
                request = out
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&table))
                    .filter(|k| !k.keys.is_empty());
            }
        }
        found.sort_by(|a, b| a.day.cmp(&b.day));
        Ok(found)
    }
}
