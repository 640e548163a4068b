//! The web inspector at `GET /`: a page embedded in the binary that shows resources and
//! their records live, over the canonical protocol. `tether serve` is all a user runs.

use crate::server::AppState;
use axum::response::Html;
use axum::routing::get;
use axum::Router;

const PAGE: &str = include_str!("../assets/inspector.html");

pub fn routes() -> Router<AppState> {
    Router::new().route("/", get(|| async { Html(PAGE) }))
}
