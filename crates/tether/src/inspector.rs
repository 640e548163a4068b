//! The web inspector at `GET /`: a page embedded in the binary that lists resources and
//! shows the selected one's records live, editable, with connection state and who else
//! is looking. `tether serve` is all a user runs.
//!
//! The page is built from `clients/js` (the TypeScript client and `inspector/main.ts`)
//! by `npm run build`, and the output is committed in `assets/`, so building the server
//! needs no Node. `npm test` in `clients/js` fails when the committed build is stale.

use crate::server::AppState;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const PAGE: &str = include_str!("../assets/inspector.html");
const SCRIPT: &str = include_str!("../assets/inspector.js");

/// Revalidate on every load: after an upgrade the page must not run an old script
/// against a new server.
const CACHE: (header::HeaderName, &str) = (header::CACHE_CONTROL, "no-cache");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8"), CACHE],
                    PAGE,
                )
                    .into_response()
            }),
        )
        .route(
            "/inspector.js",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                        CACHE,
                    ],
                    SCRIPT,
                )
                    .into_response()
            }),
        )
}
