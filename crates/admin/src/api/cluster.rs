//! `GET /api/cluster`: the controller quorum and the nodes, as this node
//! knows them.

use axum::Json;
use weir_cluster::ClusterStatus;

use crate::api::State;
use crate::error::{ApiError, ApiResult};

/// The cluster status; 404 on a node started without a controller quorum.
///
/// # Errors
///
/// 404 when this node runs alone.
pub async fn get(axum::extract::State(admin): State) -> ApiResult<Json<ClusterStatus>> {
    let controller = admin.cluster.as_ref().ok_or_else(|| {
        ApiError::not_found(
            "this node runs alone: start it with --node-id, --controller-listen and \
             --controller-quorum-voters to form a cluster",
        )
    })?;
    Ok(Json(controller.status()))
}
