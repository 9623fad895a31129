//! Reading the audit log (SPEC §15). Entries are written by the other
//! operations, each in the commit of its change; this module only lists
//! them, for admins.

use super::{Caller, Listed, OpError, Ops};
use crate::model::records::Scope;
use crate::store::{AuditEntry, AuditQuery};

impl Ops {
    /// Audit entries passing `query`, newest first, below the cursor
    /// `before`; admins only (the log names every key's doings).
    pub async fn list_audit(
        &self,
        caller: &Caller,
        query: AuditQuery,
        before: Option<u128>,
        limit: usize,
    ) -> Result<Listed<AuditEntry>, OpError> {
        caller.require(Scope::Admin)?;
        Ok(self.store().list_audit(query, before, limit).await?)
    }
}
