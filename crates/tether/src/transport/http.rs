//! The HTTP API for services (`/api/<resource>[/<id>]`), health, metrics and publish.
//!
//! Every write goes through the engine's one commit path, so it gets a position and
//! fans out to WebSocket subscribers like any other. Records are sent as
//! `{"resource", "id", "version", "data"}`; errors as `{"error": {"code", "message"}}`
//! with the status from [`tether_core::ErrorCode::http_status`].
//!
//! Every route but `/health` takes a [`Caller`]: with auth on, a request without a
//! valid bearer token is answered 401 before its handler runs, and the handler reads
//! and writes as that caller, so the access rules apply exactly as on a WebSocket.

use crate::server::AppState;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query as UrlQuery, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use tether_core::{
    Audience, Data, Error, ErrorCode, Order, Query, RecordId, ResourceName, Write, WriteKind,
};
use tether_dialects::canonical::record_json;
use tether_engine::{Identity, ReadGuard};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api", get(resources))
        .route("/api/{resource}", get(list).post(create))
        .route(
            "/api/{resource}/{id}",
            get(read)
                .put(replace)
                .patch(patch)
                .delete(remove)
                .post(create_with_id),
        )
        .route("/publish/{*topic}", post(publish))
}

/// The authenticated caller of a request (see [`crate::auth`]); 401 when the token is
/// missing or invalid and auth is on.
pub struct Caller(pub Arc<Identity>);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = state
            .security
            .auth()
            .authenticate(&parts.headers, parts.uri.query())?;
        Ok(Caller(caller.identity))
    }
}

/// An error as an HTTP response.
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = json!({"error": {"code": self.0.code.as_str(), "message": self.0.message}});
        if let Some(v) = self.0.current_version {
            body["error"]["version"] = v.into();
        }
        if self.0.code == ErrorCode::Unauthorized {
            // RFC 6750: tell the client which scheme to use.
            let challenge = HeaderValue::from_static("Bearer realm=\"tether\"");
            return (status, [(header::WWW_AUTHENTICATE, challenge)], Json(body)).into_response();
        }
        (status, Json(body)).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

async fn health(State(state): State<AppState>) -> Response {
    Json(json!({"status": "ok", "epoch": state.engine.epoch(), "pos": state.engine.position()}))
        .into_response()
}

async fn metrics(_caller: Caller, State(state): State<AppState>) -> Response {
    metrics::gauge!("tether_subscriptions").set(state.engine.subscription_count() as f64);
    metrics::gauge!("tether_changelog_position").set(state.engine.position().0 as f64);
    let text = state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn resources(Caller(who): Caller, State(state): State<AppState>) -> ApiResult {
    let resources = state.engine.resources().await?;
    // A caller sees the resources it may read something of; the count only where it
    // may read everything, since it would tell how many records others hold.
    let list: Vec<Value> = resources
        .iter()
        .filter_map(|r| match state.engine.access().read_guard(&who, &r.name) {
            ReadGuard::All => Some(json!({"name": r.name, "records": r.records})),
            ReadGuard::Check(_) => Some(json!({"name": r.name})),
            ReadGuard::None => None,
        })
        .collect();
    Ok(Json(json!({"resources": list})).into_response())
}

/// `GET /api/<resource>?field=value&order=-field&limit=N`: equality filters on the
/// other parameters; a value that parses as JSON (`true`, `3`, `null`) is compared as
/// that JSON value, anything else as a string.
async fn list(
    Caller(who): Caller,
    State(state): State<AppState>,
    Path(resource): Path<String>,
    UrlQuery(params): UrlQuery<BTreeMap<String, String>>,
) -> ApiResult {
    let resource = ResourceName::parse(&resource)?;
    let mut query = Query::default();
    for (key, value) in params {
        match key.as_str() {
            "order" => {
                query.order = Some(
                    Order::parse(&value)
                        .ok_or_else(|| Error::bad_request("order must name a field"))?,
                )
            }
            "limit" => {
                let limit: usize = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=tether_core::query::MAX_LIMIT).contains(l))
                    .ok_or_else(|| {
                        Error::bad_request(format!(
                            "limit must be 1-{}",
                            tether_core::query::MAX_LIMIT
                        ))
                    })?;
                query.limit = Some(limit);
            }
            // The caller's token, when sent in the URL, is no filter.
            "token" => {}
            _ => {
                let v = serde_json::from_str(&value).unwrap_or(Value::String(value));
                query.filter.insert(key, v);
            }
        }
    }
    let records = state.engine.query_as(&who, &resource, &query).await?;
    Ok(Json(records.iter().map(record_json).collect::<Vec<_>>()).into_response())
}

async fn read(
    Caller(who): Caller,
    State(state): State<AppState>,
    Path((resource, id)): Path<(String, String)>,
) -> ApiResult {
    let (resource, id) = (ResourceName::parse(&resource)?, RecordId::parse(&id)?);
    match state.engine.get_as(&who, &resource, &id).await? {
        Some(record) => Ok(with_etag(
            Json(record_json(&record)).into_response(),
            record.version,
        )),
        None => Err(Error::not_found(resource.as_str(), id.as_str()).into()),
    }
}

/// `POST /api/<resource>`: creates; the id is the body's `id` or a new one.
async fn create(
    Caller(who): Caller,
    State(state): State<AppState>,
    Path(resource): Path<String>,
    body: Bytes,
) -> ApiResult {
    let resource = ResourceName::parse(&resource)?;
    let data = body_object(&body)?;
    let id = match data.get("id") {
        Some(v) => RecordId::from_json(v)?,
        None => RecordId::generate(),
    };
    write(&state, &who, WriteKind::Create, resource, id, data, None).await
}

async fn create_with_id(
    Caller(who): Caller,
    State(state): State<AppState>,
    Path((resource, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let (resource, id) = (ResourceName::parse(&resource)?, RecordId::parse(&id)?);
    write(
        &state,
        &who,
        WriteKind::Create,
        resource,
        id,
        body_object(&body)?,
        None,
    )
    .await
}

async fn replace(
    Caller(who): Caller,
    State(state): State<AppState>,
    Path((resource, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let (resource, id) = (ResourceName::parse(&resource)?, RecordId::parse(&id)?);
    let expected = if_match(&headers)?;
    write(
        &state,
        &who,
        WriteKind::Upsert,
        resource,
        id,
        body_object(&body)?,
        expected,
    )
    .await
}

async fn patch(
    Caller(who): Caller,
    State(state): State<AppState>,
    Path((resource, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let (resource, id) = (ResourceName::parse(&resource)?, RecordId::parse(&id)?);
    let expected = if_match(&headers)?;
    write(
        &state,
        &who,
        WriteKind::Patch,
        resource,
        id,
        body_object(&body)?,
        expected,
    )
    .await
}

async fn remove(
    Caller(who): Caller,
    State(state): State<AppState>,
    Path((resource, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let (resource, id) = (ResourceName::parse(&resource)?, RecordId::parse(&id)?);
    let expected = if_match(&headers)?;
    write(
        &state,
        &who,
        WriteKind::Delete,
        resource,
        id,
        Data::new(),
        expected,
    )
    .await
}

/// `POST /publish/<topic>[?session=ID,...][&watching.<field>=<value>...]`: an ephemeral
/// message to the topic's subscribers, or to the subset named by the query (seed 002's
/// broadcast): `session` (repeatable, or comma-separated) keeps the connections of
/// those sessions; each `watching.<field>` keeps connections watching the resource
/// named like the topic with that field equal to the value (parsed as JSON when it
/// parses, like the filters of `GET /api/<resource>`). Any other parameter is a 400,
/// so a misspelt target never becomes a broadcast to everyone.
async fn publish(
    Caller(who): Caller,
    State(state): State<AppState>,
    Path(topic): Path<String>,
    UrlQuery(params): UrlQuery<Vec<(String, String)>>,
    body: Bytes,
) -> ApiResult {
    let mut audience = Audience::default();
    for (key, value) in params {
        if key == "session" {
            audience.sessions.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
        } else if key == "token" {
            // The caller's token, when sent in the URL.
        } else if let Some(field) = key.strip_prefix("watching.").filter(|f| !f.is_empty()) {
            let v = serde_json::from_str(&value).unwrap_or(Value::String(value));
            audience.watching.insert(field.to_owned(), v);
        } else {
            return Err(Error::bad_request(format!(
                "unknown parameter {key:?}; use session=ID or watching.<field>=<value>"
            ))
            .into());
        }
    }
    let data: Value = serde_json::from_slice(&body).map_err(|e| {
        Error::new(
            ErrorCode::BadJson,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    state
        .engine
        .publish_as(&who, &topic, data, audience)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"topic": topic}))).into_response())
}

async fn write(
    state: &AppState,
    who: &Arc<Identity>,
    kind: WriteKind,
    resource: ResourceName,
    id: RecordId,
    data: Data,
    expected: Option<u64>,
) -> ApiResult {
    let change = state
        .engine
        .write_as(who, Write::new(kind, resource, id, data, expected)?)
        .await?;
    // An upsert that found no record (version 1) created one, like a create.
    let created = kind == WriteKind::Create || (kind == WriteKind::Upsert && change.version == 1);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut body = match change.record() {
        Some(record) => record_json(&record),
        None => {
            json!({"resource": change.resource, "id": change.id, "version": change.version, "deleted": true})
        }
    };
    body["pos"] = change.position.0.into();
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::CREATED {
        let location = format!("/api/{}/{}", change.resource, change.id);
        if let Ok(v) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, v);
        }
    }
    Ok(with_etag(response, change.version))
}

fn body_object(body: &Bytes) -> Result<Data, Error> {
    if body.is_empty() {
        return Ok(Data::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(Error::bad_request("the body must be a JSON object")),
        Err(e) => Err(Error::new(
            ErrorCode::BadJson,
            format!("the body is not valid JSON: {e}"),
        )),
    }
}

/// `If-Match: 3` or `If-Match: "3"`: the version the write expects.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, Error> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(|s| s.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|s| s.parse().ok())
        .map(Some)
        .ok_or_else(|| Error::bad_request("If-Match must be a record version, e.g. \"3\""))
}

fn with_etag(mut response: Response, version: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}
