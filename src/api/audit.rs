//! `GET /api/v1/audit-log` (admin scope): who changed what (SPEC §15).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::{ApiError, ErrorEnvelope};
use super::extract::{encode_cursor, query_time, ApiQuery, List, ListParams};
use super::AppState;
use crate::model::time::format_ms;
use crate::store::{AuditEntry, AuditQuery};

/// Filters and paging of `GET /api/v1/audit-log`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// The actor's API key id (`key_...`) or key name.
    pub actor: Option<String>,
    /// An action name, e.g. `destination.update`.
    pub action: Option<String>,
    /// Only entries made at or after this RFC 3339 time.
    #[param(format = DateTime)]
    pub after: Option<String>,
    /// Only entries made before this RFC 3339 time.
    #[param(format = DateTime)]
    pub before: Option<String>,
    /// 1 to 250; default 50.
    #[param(minimum = 1, maximum = 250)]
    pub limit: Option<u32>,
    /// The previous page's `next_cursor` (empty: the first page).
    #[param(pattern = "^([0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25})?$")]
    pub cursor: Option<String>,
}

/// Who made a change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditActorView {
    /// The API key used (`key_...`); `null` for the local operator
    /// (`krafter api-keys` on the data directory).
    #[schema(required = true)]
    pub api_key_id: Option<String>,
    /// The key's name when the change was made.
    pub name: String,
    /// The door the change came in by.
    #[schema(value_type = AuditVia)]
    pub via: String,
}

/// `api`, `dashboard` or `cli`.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum AuditVia {
    Api,
    Dashboard,
    Cli,
}

/// One audit entry. Secret values never appear: a changed secret is
/// recorded as `"(secret)"`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEntryView {
    #[schema(pattern = "^aud_[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")]
    pub id: String,
    #[schema(format = DateTime)]
    pub at: String,
    pub actor: AuditActorView,
    /// E.g. `destination.update`, `api_key.create`.
    pub action: String,
    /// The id of what changed.
    pub target_id: String,
    /// Field → `[old, new]`.
    #[schema(value_type = Object, additional_properties)]
    pub changes: BTreeMap<String, [serde_json::Value; 2]>,
}

impl AuditEntryView {
    /// The wire form of a stored entry.
    pub fn from_entry(e: AuditEntry) -> AuditEntryView {
        AuditEntryView {
            id: e.id.to_string(),
            at: format_ms(e.at_ms),
            actor: AuditActorView {
                api_key_id: e.actor.api_key_id,
                name: e.actor.name,
                via: e.actor.via,
            },
            action: e.action,
            target_id: e.target_id,
            changes: e.changes,
        }
    }
}

/// Lists audit entries, newest first.
#[utoipa::path(get, path = "/api/v1/audit-log", tag = "audit-log",
    params(AuditParams),
    responses((status = 200, body = List<AuditEntryView>), (status = "4XX", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Json<List<AuditEntryView>>, ApiError> {
    let paging = ListParams {
        limit: params.limit,
        cursor: params.cursor.clone(),
    };
    let (limit, cursor) = (paging.limit()?, paging.cursor()?);
    let query = AuditQuery {
        actor: params.actor.filter(|a| !a.is_empty()),
        action: params.action.filter(|a| !a.is_empty()),
        after_ms: query_time("after", params.after.as_deref())?,
        before_ms: query_time("before", params.before.as_deref())?,
    };
    let page = state.ops.list_audit(&caller, query, cursor, limit).await?;
    Ok(Json(List {
        data: page
            .items
            .into_iter()
            .map(AuditEntryView::from_entry)
            .collect(),
        next_cursor: encode_cursor(page.next),
    }))
}
