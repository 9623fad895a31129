//! The API's JSON shapes the pages read: the API's own view types, read
//! back from its answers (not from storage), so the dashboard shows exactly
//! what an API client sees and cannot drift from the API.

pub use crate::api::api_keys::ApiKeyView as ApiKey;
pub use crate::api::destinations::DestinationView as Destination;
pub use crate::api::events::{
    AttemptView as Attempt, BulkReplayAccepted, DeliveryCounts as Counts, DeliveryView as Delivery,
    EventDetail, EventView as Event, ReplayAccepted, ReplayView as ReplayJob,
};
pub use crate::api::sources::SourceView as Source;
pub use crate::ingest::providers::GenericHmacConfig as ProviderConfig;
