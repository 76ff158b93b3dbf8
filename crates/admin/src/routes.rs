//! The router: one table of paths and methods, which the OpenAPI document
//! must describe exactly (checked by a unit test).

use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::{delete, get, patch, post, put, MethodRouter};
use axum::Router;
use tracing::Instrument;
use weir_core::Escaped;

use crate::api::{cluster, connections, exchanges, groups, overview, queues, records, topics};
use crate::error::ApiError;
use crate::{console, openapi, prometheus, Admin};

/// A route: path, its methods (lower case, as OpenAPI spells them) and handlers.
pub(crate) type Route = (
    &'static str,
    &'static [&'static str],
    MethodRouter<Arc<Admin>>,
);

/// Every route.
pub(crate) fn table() -> Vec<Route> {
    vec![
        ("/", &["get"], get(console::index)),
        ("/static/{file}", &["get"], get(console::asset)),
        ("/metrics", &["get"], get(prometheus::metrics)),
        ("/api/openapi.json", &["get"], get(openapi::document)),
        ("/api/overview", &["get"], get(overview::get)),
        (
            "/api/topics",
            &["get", "post"],
            get(topics::list).post(topics::create),
        ),
        (
            "/api/topics/{name}",
            &["get", "delete"],
            get(topics::get).delete(topics::delete),
        ),
        (
            "/api/topics/{name}/configs",
            &["patch"],
            patch(topics::patch_configs),
        ),
        (
            "/api/topics/{name}/partitions",
            &["post"],
            post(topics::add_partitions),
        ),
        (
            "/api/topics/{name}/reassign",
            &["post"],
            post(topics::reassign),
        ),
        (
            "/api/topics/{name}/records",
            &["get", "post"],
            get(records::peek).post(records::produce),
        ),
        ("/api/groups", &["get"], get(groups::list)),
        (
            "/api/groups/{group}",
            &["get", "delete"],
            get(groups::get).delete(groups::delete),
        ),
        (
            "/api/groups/{group}/reset-offsets",
            &["post"],
            post(groups::reset_offsets),
        ),
        ("/api/queues", &["get"], get(queues::list)),
        (
            "/api/queues/{vhost}/{name}",
            &["get", "put", "delete"],
            get(queues::get).put(queues::declare).delete(queues::delete),
        ),
        (
            "/api/queues/{vhost}/{name}/contents",
            &["delete"],
            delete(queues::purge),
        ),
        (
            "/api/queues/{vhost}/{name}/get",
            &["post"],
            post(queues::get_messages),
        ),
        ("/api/exchanges", &["get"], get(exchanges::list)),
        (
            "/api/exchanges/{vhost}/{name}",
            &["put", "delete"],
            put(exchanges::declare).delete(exchanges::delete),
        ),
        (
            "/api/exchanges/{vhost}/{name}/publish",
            &["post"],
            post(exchanges::publish),
        ),
        (
            "/api/bindings",
            &["get", "post", "delete"],
            get(exchanges::list_bindings)
                .post(exchanges::create_binding)
                .delete(exchanges::delete_binding),
        ),
        ("/api/connections", &["get"], get(connections::list)),
        ("/api/cluster", &["get"], get(cluster::get)),
        (
            "/api/connections/{id}",
            &["delete"],
            delete(connections::close),
        ),
    ]
}

/// The whole HTTP surface over `admin`.
pub fn router(admin: Arc<Admin>) -> Router {
    let mut router = Router::new();
    for (path, _, handlers) in table() {
        router = router.route(path, handlers.fallback(method_not_allowed));
    }
    router
        .fallback(not_found)
        .layer(axum::middleware::from_fn(in_request_span))
        .with_state(admin)
}

/// Runs a request inside a span naming the client, so a refused request is
/// logged once with where it came from.
async fn in_request_span(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or_else(|| "?".to_owned(), |info| info.0.to_string());
    let span = tracing::info_span!(
        "http",
        %peer,
        method = %request.method(),
        path = %Escaped(request.uri().path())
    );
    next.run(request).instrument(span).await
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such path: {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed here"),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;
    use weir_core::{Broker, BrokerConfig};

    use crate::Admin;

    async fn admin(dir: &std::path::Path) -> Arc<Admin> {
        let broker = Arc::new(Broker::open(BrokerConfig::new(dir)).expect("broker"));
        let vhost = weir_core::queues::VirtualHost::open(
            "/",
            &dir.join("vhost"),
            weir_log::LogConfig::default(),
            Arc::clone(&broker),
        )
        .expect("vhost");
        Arc::new(Admin::new(
            broker,
            HashMap::from([("/".to_owned(), vhost)]),
            0,
        ))
    }

    async fn call(
        admin: &Arc<Admin>,
        method: &str,
        path: &str,
        body: &str,
    ) -> (StatusCode, String) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .expect("request");
        let response = super::router(Arc::clone(admin))
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Every method of the table reaches a handler (never the 404/405 fallbacks).
    #[tokio::test]
    async fn every_route_in_the_table_is_served() {
        let dir = tempfile::tempdir().expect("tempdir");
        let admin = admin(dir.path()).await;
        for (path, methods, _) in super::table() {
            let concrete = path
                .replace("{vhost}", "%2F")
                .replace("{file}", "console.js")
                .replace(['{', '}'], "");
            for method in methods.iter() {
                let (status, body) = call(&admin, &method.to_uppercase(), &concrete, "{}").await;
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                assert!(!body.contains("no such path"), "{method} {path}: {body}");
            }
        }
    }

    #[tokio::test]
    async fn errors_are_json_with_the_right_status() {
        let dir = tempfile::tempdir().expect("tempdir");
        let admin = admin(dir.path()).await;
        let (status, body) = call(&admin, "GET", "/api/topics/nope", "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("\"error\""), "{body}");
        let (status, body) = call(&admin, "POST", "/api/topics", r#"{"name": 5}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("name"), "{body}");
        let (status, _) = call(&admin, "POST", "/api/topics", r#"{"name": "t"}"#).await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, _) = call(&admin, "POST", "/api/topics", r#"{"name": "t"}"#).await;
        assert_eq!(status, StatusCode::CONFLICT);
        let (status, _) = call(&admin, "PUT", "/api/topics", "").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let (status, _) = call(&admin, "GET", "/api/nothing", "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
