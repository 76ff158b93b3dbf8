//! Handlers of the JSON API, one file per kind of thing.

pub mod cluster;
pub mod connections;
pub mod exchanges;
pub mod groups;
pub mod overview;
pub mod queues;
pub mod records;
pub mod topics;

use std::sync::Arc;

use weir_core::queues::VirtualHost;

use crate::error::{ApiError, ApiResult};
use crate::Admin;

/// The shared state every handler gets.
pub type State = axum::extract::State<Arc<Admin>>;

/// A virtual host by name (`%2F` in paths for `/`).
///
/// # Errors
///
/// 404 for an unknown virtual host.
pub fn vhost(admin: &Admin, name: &str) -> ApiResult<Arc<VirtualHost>> {
    admin
        .vhosts
        .get(name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no vhost '{name}'")))
}

/// Checks an exchange or queue name from a path: AMQP names are short
/// strings (255 bytes at most).
///
/// # Errors
///
/// 400 naming what is too long.
pub fn check_name(what: &str, name: &str) -> ApiResult<()> {
    if name.len() > weir_core::queues::NAME_BYTES_MAX {
        return Err(ApiError::bad_request(format!(
            "the {what} name is {} bytes; the limit is {}",
            name.len(),
            weir_core::queues::NAME_BYTES_MAX
        )));
    }
    Ok(())
}

/// Who the HTTP API acts as towards the core (no authentication yet; it
/// comes on no connection, so it owns no exclusive queue).
pub fn http_principal() -> weir_core::Principal {
    weir_core::Principal::internal()
}
