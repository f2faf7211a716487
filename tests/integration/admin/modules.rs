//! Module keys through the admin API: added, changed and deleted, each
//! working at once and surviving a restart.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_keys_added_changed_and_deleted_work_at_once_and_survive_a_restart() {
    let dir = TempDir::new("modules");
    let config = || config_with(&format!("data_dir = \"{}\"", dir.path().display()));
    let server = TestServer::with_config(config()).await;
    let (st, body) = server
        .http(
            "POST",
            "/v1/admin/modules",
            Some(ALICE),
            Some(json!({"key": "acme-new", "group": "sales"})),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(
        body["module"],
        json!({"key": "acme-new", "group": "sales", "default_assignee": null,
               "help_path": "/help/acme-new", "source": "api"})
    );
    // Works at once for help requests and the help page.
    let (st, made) = ask_help(&server, "acme-new").await;
    assert_eq!(st, 201, "{made}");
    let (st, _) = server.http("GET", "/v1/modules/acme-new", None, None).await;
    assert_eq!(st, 200);
    // A drawn key.
    let (st, drawn) = server
        .http(
            "POST",
            "/v1/admin/modules",
            Some(ALICE),
            Some(json!({"group": "support"})),
        )
        .await;
    assert_eq!(st, 201, "{drawn}");
    let drawn_key = drawn["module"]["key"].as_str().unwrap().to_string();
    assert!(drawn_key.starts_with("qs-"), "{drawn}");
    // Changed: its default assignee.
    let (st, changed) = server
        .http(
            "PATCH",
            "/v1/admin/modules/acme-new",
            Some(ALICE),
            Some(json!({"group": "support", "default_assignee": "bob"})),
        )
        .await;
    assert_eq!(st, 200, "{changed}");
    let (_, made) = ask_help(&server, "acme-new").await;
    let code = made["code"].as_str().unwrap().to_string();
    let (_, case) = server
        .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
        .await;
    assert_eq!(case["assignee"], "bob", "{case}");
    // Every error its code.
    for (method, path, body, status, code) in [
        (
            "POST",
            "/v1/admin/modules",
            json!({"key": MODULE, "group": "support"}),
            409,
            "conflict",
        ),
        (
            "POST",
            "/v1/admin/modules",
            json!({"key": GLOBEX_MODULE, "group": "support"}),
            409,
            "conflict",
        ),
        (
            "POST",
            "/v1/admin/modules",
            json!({"key": "x y", "group": "support"}),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/admin/modules",
            json!({"group": "nope"}),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/admin/modules",
            json!({"group": "sales", "default_assignee": "bob"}),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/admin/modules",
            json!({"group": "support", "default_assignee": "zed"}),
            400,
            "bad_request",
        ),
        (
            "PATCH",
            "/v1/admin/modules/acme-qs",
            json!({"group": "sales"}),
            409,
            "conflict",
        ),
        (
            "PATCH",
            "/v1/admin/modules/globex-qs",
            json!({"group": "support"}),
            404,
            "not_found",
        ),
        (
            "PATCH",
            "/v1/admin/modules/nope",
            json!({"group": "support"}),
            404,
            "not_found",
        ),
    ] {
        let (st, got) = server
            .http(method, path, Some(ALICE), Some(body.clone()))
            .await;
        assert_eq!(
            (st, got["code"].as_str().unwrap_or("")),
            (status, code),
            "{method} {path} {body}: {got}"
        );
    }
    let (st, _) = server
        .http(
            "POST",
            "/v1/admin/modules",
            Some(BOB),
            Some(json!({"group": "support"})),
        )
        .await;
    assert_eq!(st, 403);
    // Deleted: help requests with it are refused at once.
    let (st, _) = server
        .http(
            "DELETE",
            &format!("/v1/admin/modules/{drawn_key}"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(st, 204);
    let (st, refused) = ask_help(&server, &drawn_key).await;
    assert_eq!(
        (st, refused["code"].clone()),
        (401, json!("unauthorized")),
        "{refused}"
    );
    server.stop().await;

    // A restart keeps what the API did.
    let server = TestServer::with_config(config()).await;
    let (_, list) = server
        .http("GET", "/v1/admin/modules", Some(ALICE), None)
        .await;
    let keys: Vec<&str> = list["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["key"].as_str().unwrap())
        .collect();
    assert!(
        keys.contains(&"acme-new") && !keys.contains(&drawn_key.as_str()),
        "{list}"
    );
    let (_, made) = ask_help(&server, "acme-new").await;
    let code = made["code"].as_str().unwrap().to_string();
    let (_, case) = server
        .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
        .await;
    assert_eq!(case["assignee"], "bob", "{case}");
    assert_eq!(ask_help(&server, &drawn_key).await.0, 401);
}
