//! `/v1/admin/webhooks`: an admin manages the company's webhook endpoints,
//! reads their delivery logs and replays events.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::http::{ApiResult, AuthAgent, acknowledged, body};
use super::routes::Route;
use crate::app::App;
use crate::core::commands::webhooks::{NewWebhook, WebhookPatch};
use crate::error::Error;
use crate::webhook::Status;

pub fn routes() -> Vec<Route> {
    vec![
        Route::get("/v1/admin/webhooks", list),
        Route::post("/v1/admin/webhooks", add),
        Route::patch("/v1/admin/webhooks/{id}", update),
        Route::delete("/v1/admin/webhooks/{id}", remove),
        Route::get("/v1/admin/webhooks/{id}/deliveries", deliveries),
        Route::post("/v1/admin/webhooks/{id}/replay", replay),
        Route::post("/v1/admin/webhooks/{id}/secret", secret),
    ]
}

async fn list(State(app): State<App>, AuthAgent(agent): AuthAgent) -> ApiResult<Response> {
    app.fresh(agent.company_index).await?;
    let webhooks = app.broker.admin_webhooks(&agent)?;
    Ok(Json(json!({ "webhooks": webhooks })).into_response())
}

async fn add(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let new: NewWebhook = body(raw)?;
    let (webhook, secret) = acknowledged(&app, Some(agent.company_index), || {
        app.broker.admin_add_webhook(&agent, new)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "webhook": webhook, "secret": secret })),
    )
        .into_response())
}

async fn update(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let change: WebhookPatch = body(raw)?;
    let webhook = acknowledged(&app, Some(agent.company_index), || {
        app.broker.admin_update_webhook(&agent, &id, change)
    })
    .await?;
    Ok(Json(json!({ "webhook": webhook })).into_response())
}

async fn remove(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    acknowledged(&app, Some(agent.company_index), || {
        app.broker.admin_remove_webhook(&agent, &id)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn deliveries(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    Path(id): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> ApiResult<Response> {
    let status = match q
        .get("status")
        .map(String::as_str)
        .filter(|s| !s.is_empty())
    {
        None => None,
        Some("pending") => Some(Status::Pending),
        Some("succeeded") => Some(Status::Succeeded),
        Some("failed") => Some(Status::Failed),
        Some(_) => {
            return Err(Error::bad_request("status must be pending, succeeded or failed").into());
        }
    };
    app.fresh(agent.company_index).await?;
    let deliveries = app.broker.admin_deliveries(&agent, &id, status)?;
    Ok(Json(json!({ "deliveries": deliveries })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Replay {
    after_seq: u64,
}

async fn replay(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let r: Replay = body(raw)?;
    let queued = acknowledged(&app, Some(agent.company_index), || {
        app.broker.admin_replay(&agent, &id, r.after_seq)
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "queued": queued }))).into_response())
}

async fn secret(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let secret = acknowledged(&app, Some(agent.company_index), || {
        app.broker.admin_webhook_secret(&agent, &id)
    })
    .await?;
    Ok(Json(json!({ "secret": secret })).into_response())
}
