//! The admin API of PROTOCOL.md ("The directory at run time"): an admin
//! agent manages its company's agents. Bodies are JSON, bounded like every
//! other; errors name the field.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde_json::json;

use super::http::{ApiResult, AuthAgent, acknowledged, body};
use crate::app::App;
use crate::core::commands::admin::{
    AgentPatch, GroupPatch, ModulePatch, NewAgent, NewGroup, NewModule,
};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/admin/agents", get(list).post(add))
        .route("/v1/admin/agents/{id}", patch(update).delete(remove))
        .route("/v1/admin/agents/{id}/token", post(token))
        .route("/v1/admin/export", get(export))
        .route("/v1/admin/groups", get(groups).post(add_group))
        .route(
            "/v1/admin/groups/{id}",
            patch(update_group).delete(remove_group),
        )
        .route("/v1/admin/modules", get(modules).post(add_module))
        .route(
            "/v1/admin/modules/{key}",
            patch(update_module).delete(remove_module),
        )
}

async fn list(State(app): State<App>, AuthAgent(agent): AuthAgent) -> ApiResult<Response> {
    app.fresh(agent.company_index).await;
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
    Path(id): Path<String>,
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
    Path(id): Path<String>,
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
    Path(id): Path<String>,
) -> ApiResult<Response> {
    acknowledged(&app, Some(agent.company_index), || {
        app.broker.admin_remove_agent(&agent, &id)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn export(State(app): State<App>, AuthAgent(agent): AuthAgent) -> ApiResult<Response> {
    app.fresh(agent.company_index).await;
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
    app.fresh(agent.company_index).await;
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
    Path(id): Path<String>,
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
    Path(id): Path<String>,
) -> ApiResult<Response> {
    acknowledged(&app, Some(agent.company_index), || {
        app.broker.admin_remove_group(&agent, &id)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn modules(State(app): State<App>, AuthAgent(agent): AuthAgent) -> ApiResult<Response> {
    app.fresh(agent.company_index).await;
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
    Path(key): Path<String>,
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
    Path(key): Path<String>,
) -> ApiResult<Response> {
    acknowledged(&app, Some(agent.company_index), || {
        app.broker.admin_remove_module(&agent, &key)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
