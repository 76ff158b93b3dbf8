//! `GET /api/openapi.json`: the hand-written OpenAPI 3.1 document of the API.

use axum::http::header;
use axum::response::IntoResponse;

/// The document, as built into the binary.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// Serves the document.
pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    #[test]
    fn every_route_is_documented_and_nothing_else() {
        let document: Value = serde_json::from_str(super::DOCUMENT).expect("valid JSON");
        let paths = document["paths"].as_object().expect("paths");
        let documented: BTreeSet<(String, String)> = paths
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .expect("path item")
                    .keys()
                    .filter(|key| key.as_str() != "parameters")
                    .map(move |method| (path.clone(), method.clone()))
            })
            .collect();
        let routed: BTreeSet<(String, String)> = crate::routes::table()
            .iter()
            .flat_map(|(path, methods, _)| {
                methods
                    .iter()
                    .map(move |method| ((*path).to_owned(), (*method).to_owned()))
            })
            .collect();
        assert_eq!(routed, documented);
    }
}
