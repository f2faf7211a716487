//! The admin API of PROTOCOL.md ("The directory at run time"): an admin
//! agent manages its company's agents, groups and module keys; the
//! operator manages companies. Bodies are JSON, bounded like every other;
//! errors name the field.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::api_error::ApiError;
use super::http::{ApiResult, AuthAgent, PathParam, acknowledged, body};
use super::routes::Route;
use crate::app::App;
use crate::core::commands::admin::{
    AgentPatch, GroupPatch, ModulePatch, NewAgent, NewGroup, NewModule,
};
use crate::core::commands::companies::NewCompany;
use crate::error::Error;

/// The admin API's routes, registered with the rest (`http::routes`).
pub fn routes() -> Vec<Route> {
    vec![
        Route::get("/v1/admin/agents", list),
        Route::post("/v1/admin/agents", add),
        Route::patch("/v1/admin/agents/{id}", update),
        Route::delete("/v1/admin/agents/{id}", remove),
        Route::post("/v1/admin/agents/{id}/token", token),
        Route::get("/v1/admin/export", export),
        Route::get("/v1/admin/groups", groups),
        Route::post("/v1/admin/groups", add_group),
        Route::patch("/v1/admin/groups/{id}", update_group),
        Route::delete("/v1/admin/groups/{id}", remove_group),
        Route::get("/v1/admin/companies", companies),
        Route::post("/v1/admin/companies", add_company),
        Route::delete("/v1/admin/companies/{id}", remove_company),
        Route::get("/v1/admin/modules", modules),
        Route::post("/v1/admin/modules", add_module),
        Route::patch("/v1/admin/modules/{key}", update_module),
        Route::delete("/v1/admin/modules/{key}", remove_module),
    ]
}

async fn list(State(app): State<App>, AuthAgent(agent): AuthAgent) -> ApiResult<Response> {
    app.fresh(agent.company_index).await?;
    let agents = app.broker.admin_agents(&agent)?;
    Ok(Json(json!({ "agents": agents })).into_response())
}

async fn add(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let new: NewAgent = body(raw)?;
    let (view, token) = acknowledged(&app, Some(agent.company_index), || {
        app.broker.admin_add_agent(&agent, new)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "agent": view, "token": token })),
    )
        .into_response())
}

async fn update(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    PathParam(id): PathParam<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let change: AgentPatch = body(raw)?;
    let view = acknowledged(&app, Some(agent.company_index), || {
        app.broker.admin_update_agent(&agent, &id, change)
    })
    .await?;
    Ok(Json(json!({ "agent": view })).into_response())
}

async fn token(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    PathParam(id): PathParam<String>,
) -> ApiResult<Response> {
    let token = acknowledged(&app, Some(agent.company_index), || {
        app.broker.admin_agent_token(&agent, &id)
    })
    .await?;
    Ok(Json(json!({ "token": token })).into_response())
}

async fn remove(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    PathParam(id): PathParam<String>,
) -> ApiResult<Response> {
    acknowledged(&app, Some(agent.company_index), || {
        app.broker.admin_remove_agent(&agent, &id)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn export(State(app): State<App>, AuthAgent(agent): AuthAgent) -> ApiResult<Response> {
    app.fresh(agent.company_index).await?;
    let text = app.broker.admin_export(&agent)?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/toml; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn groups(State(app): State<App>, AuthAgent(agent): AuthAgent) -> ApiResult<Response> {
    app.fresh(agent.company_index).await?;
    let groups = app.broker.admin_groups(&agent)?;
    Ok(Json(json!({ "groups": groups })).into_response())
}

async fn add_group(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let new: NewGroup = body(raw)?;
    let group = acknowledged(&app, Some(agent.company_index), || {
        app.broker.admin_add_group(&agent, new)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(json!({ "group": group }))).into_response())
}

async fn update_group(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    PathParam(id): PathParam<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let change: GroupPatch = body(raw)?;
    let group = acknowledged(&app, Some(agent.company_index), || {
        app.broker.admin_update_group(&agent, &id, change)
    })
    .await?;
    Ok(Json(json!({ "group": group })).into_response())
}

async fn remove_group(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    PathParam(id): PathParam<String>,
) -> ApiResult<Response> {
    acknowledged(&app, Some(agent.company_index), || {
        app.broker.admin_remove_group(&agent, &id)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn modules(State(app): State<App>, AuthAgent(agent): AuthAgent) -> ApiResult<Response> {
    app.fresh(agent.company_index).await?;
    let modules = app.broker.admin_modules(&agent)?;
    Ok(Json(json!({ "modules": modules })).into_response())
}

async fn add_module(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let new: NewModule = body(raw)?;
    let module = acknowledged(&app, Some(agent.company_index), || {
        app.broker.admin_add_module(&agent, new)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(json!({ "module": module }))).into_response())
}

async fn update_module(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    PathParam(key): PathParam<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let change: ModulePatch = body(raw)?;
    let module = acknowledged(&app, Some(agent.company_index), || {
        app.broker.admin_update_module(&agent, &key, change)
    })
    .await?;
    Ok(Json(json!({ "module": module })).into_response())
}

async fn remove_module(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    PathParam(key): PathParam<String>,
) -> ApiResult<Response> {
    acknowledged(&app, Some(agent.company_index), || {
        app.broker.admin_remove_module(&agent, &key)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The operator, by `Authorization: Bearer <operator_token>`: 401 without
/// a valid token, 403 for an agent's token or when no operator token is
/// configured.
pub struct Operator;

impl FromRequestParts<App> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        if app.broker.is_operator(token) {
            return Ok(Operator);
        }
        if token.is_empty() || app.authenticate(token).await.is_none() {
            return Err(ApiError(Error::unauthorized(
                "a valid Authorization: Bearer token is required",
            )));
        }
        Err(ApiError(Error::forbidden(
            if app.broker.config().operator_hash().is_none() {
                "companies are managed with the operator token, and none is configured (operator_token)"
            } else {
                "only the operator manages companies"
            },
        )))
    }
}

async fn companies(State(app): State<App>, _: Operator) -> ApiResult<Response> {
    if let Some(c) = &app.cluster {
        c.sync_companies().await;
    }
    for shard in 0..app.broker.shards() {
        app.fresh(shard).await?;
    }
    Ok(Json(json!({ "companies": app.broker.admin_companies() })).into_response())
}

async fn add_company(
    State(app): State<App>,
    _: Operator,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let new: NewCompany = body(raw)?;
    app.broker.check_new_company(&new)?;
    // In a cluster the company is registered in Redis first, so that every
    // node adds it in the same place; its first admin is then a commit of
    // its log like any other.
    let shard = match &app.cluster {
        Some(c) => Some(c.register_company(&new.id, &new.name).await?),
        None => None,
    };
    let (company, agent, token) =
        acknowledged(&app, shard, || app.broker.admin_add_company(new)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "company": company, "agent": agent, "token": token })),
    )
        .into_response())
}

async fn remove_company(
    State(app): State<App>,
    _: Operator,
    PathParam(id): PathParam<String>,
) -> ApiResult<Response> {
    let shard = app.broker.directory().company(&id).map(|c| c.index);
    acknowledged(&app, shard, || app.broker.admin_remove_company(&id)).await?;
    if let Some(c) = &app.cluster {
        c.unregister_company(&id).await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
