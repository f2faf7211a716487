//! Companies at run time under the operator token: added with a first
//! admin who works at once, listed, deleted (everyone signed out), with
//! every error code, in each storage mode, across a restart and across the
//! nodes of a cluster.

use serde_json::{Value, json};

use crate::util::*;

const OPERATOR: &str = "operator-token-000001";
const WITH_OPERATOR: &str = "operator_token = \"operator-token-000001\"";

async fn operator(
    server: &TestServer,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    server.http(method, path, Some(OPERATOR), body).await
}

/// Adds company `id` with admin `peter`; returns the answer and the token.
async fn add_company(server: &TestServer, id: &str) -> (Value, String) {
    let (st, body) = operator(
        server,
        "POST",
        "/v1/admin/companies",
        Some(json!({"id": id, "name": format!("Company {id}"),
                    "admin": {"id": "peter", "name": "Peter"}})),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let token = body["token"].as_str().expect("a token").to_string();
    assert_eq!(token.len(), 64, "{body}");
    (body, token)
}

/// The ids `GET /v1/admin/companies` lists.
async fn company_ids(server: &TestServer) -> Vec<String> {
    let (st, body) = operator(server, "GET", "/v1/admin/companies", None).await;
    assert_eq!(st, 200, "{body}");
    body["companies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

async fn a_company_added_by_the_operator_works_at_once_and_deleted_signs_out(mode: Mode) {
    let server = TestServer::with_extra_in(mode, WITH_OPERATOR).await;
    let (body, peter) = add_company(&server, "initech").await;
    assert_eq!(
        body["company"],
        json!({"id": "initech", "name": "Company initech", "source": "api",
               "groups": 1, "agents": 1, "open_cases": 0})
    );
    assert_eq!(
        body["agent"],
        json!({"id": "peter", "name": "Peter", "groups": ["support"], "admin": true,
               "max_cases": 5, "disabled": false, "source": "api"})
    );
    assert_eq!(company_ids(&server).await, ["acme", "globex", "initech"]);

    // The first admin signs in at once and runs the company.
    let mut p = server.agent(&peter).await;
    p.ok(json!({"type": "subscribe"}), "snapshot").await;
    let code = create_case(&mut p, "support").await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, added) = server
        .http(
            "POST",
            "/v1/admin/agents",
            Some(&peter),
            Some(json!({"id": "milton", "name": "Milton", "groups": ["support"]})),
        )
        .await;
    assert_eq!(st, 201, "{added}");
    let (st, module) = server
        .http(
            "POST",
            "/v1/admin/modules",
            Some(&peter),
            Some(json!({"key": "initech-qs", "group": "support"})),
        )
        .await;
    assert_eq!(st, 201, "{module}");
    let (mut customer, joined) = request_help(&server, "initech-qs").await;
    assert_eq!(joined["case"]["status"], "pending", "{joined}");
    // Nothing of it shows in another company, nor the other way round.
    let (st, _) = server
        .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
        .await;
    assert_eq!(st, 404);
    let (_, agents) = server
        .http("GET", "/v1/admin/agents", Some(&peter), None)
        .await;
    let ids: Vec<&str> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["peter", "milton"]);

    // Deleted: everyone connected to it is signed out, its tokens and keys
    // stop working, its id stays taken.
    let (st, body) = operator(&server, "DELETE", "/v1/admin/companies/initech", None).await;
    assert_eq!(st, 204, "{body}");
    assert_eq!(p.closed().await.0, Closed::Code(4500));
    assert_eq!(customer.closed().await.0, Closed::Code(4500));
    let mut again = server.ws().await;
    again
        .send(json!({"type": "hello", "role": "agent", "token": peter}))
        .await;
    assert_eq!(again.next().await["code"], "unauthorized");
    let (st, _) = server
        .http(
            "POST",
            "/v1/help",
            None,
            Some(json!({"module": "initech-qs", "name": "Ana"})),
        )
        .await;
    assert_eq!(st, 401);
    assert_eq!(company_ids(&server).await, ["acme", "globex"]);
    assert_error(
        operator(
            &server,
            "POST",
            "/v1/admin/companies",
            Some(json!({"id": "initech", "name": "x", "admin": {"id": "a", "name": "A"}})),
        )
        .await,
        409,
        "conflict",
        "stays taken",
    );
    // acme never noticed.
    let mut alice = server.agent(ALICE).await;
    create_case(&mut alice, "support").await;
    let metrics = scrape(&server).await;
    for change in ["company_added", "company_deleted"] {
        let series = format!("casebroker_directory_changes_total{{change=\"{change}\"}}");
        assert_eq!(value(&metrics, &series), 1.0, "{series}");
    }
}

in_every_mode!(a_company_added_by_the_operator_works_at_once_and_deleted_signs_out);

async fn every_bad_company_request_gets_its_code(mode: Mode) {
    let server =
        TestServer::with_extra_in(mode, &format!("{WITH_OPERATOR}\nmax_companies = 3")).await;
    let post = |token: Option<&'static str>, body: Value| {
        let server = &server;
        async move {
            server
                .http("POST", "/v1/admin/companies", token, Some(body))
                .await
        }
    };
    let ok = json!({"id": "initech", "name": "Initech", "admin": {"id": "peter", "name": "Peter"}});
    assert_error(post(None, ok.clone()).await, 401, "unauthorized", "token");
    assert_error(
        post(Some("not-a-token-at-all"), ok.clone()).await,
        401,
        "unauthorized",
        "token",
    );
    assert_error(
        post(Some(ALICE), ok.clone()).await,
        403,
        "forbidden",
        "operator",
    );
    assert_error(
        server
            .http("GET", "/v1/admin/companies", Some(ALICE), None)
            .await,
        403,
        "forbidden",
        "operator",
    );
    // The operator's token is no agent's.
    let mut ws = server.ws().await;
    ws.send(json!({"type": "hello", "role": "agent", "token": OPERATOR}))
        .await;
    assert_eq!(ws.next().await["code"], "unauthorized");
    let admin = json!({"id": "peter", "name": "Peter"});
    for (body, mentions) in [
        (json!({"id": "", "name": "x", "admin": admin}), "id"),
        (json!({"id": "a b", "name": "x", "admin": admin}), "id"),
        (json!({"id": "x", "name": "", "admin": admin}), "name"),
        (
            json!({"id": "x", "name": "n".repeat(101), "admin": admin}),
            "name",
        ),
        (json!({"id": "x", "name": "X"}), "admin"),
        (
            json!({"id": "x", "name": "X", "admin": {"id": "customer", "name": "C"}}),
            "admin.id",
        ),
        (
            json!({"id": "x", "name": "X", "admin": {"id": "p", "name": ""}}),
            "admin.name",
        ),
        (
            json!({"id": "x", "name": "X", "admin": {"id": "p"}}),
            "admin",
        ),
        (
            json!({"id": "x", "name": "X", "admin": admin, "plan": "gold"}),
            "plan",
        ),
        (
            json!({"id": "x", "name": "X", "admin": {"id": "p", "name": "P", "token": "t"}}),
            "token",
        ),
    ] {
        assert_error(
            post(Some(OPERATOR), body.clone()).await,
            400,
            "bad_request",
            mentions,
        );
    }
    assert_error(
        post(
            Some(OPERATOR),
            json!({"id": "acme", "name": "A", "admin": admin}),
        )
        .await,
        409,
        "conflict",
        "acme",
    );
    assert_error(
        operator(&server, "DELETE", "/v1/admin/companies/acme", None).await,
        409,
        "conflict",
        "config file",
    );
    assert_error(
        operator(&server, "DELETE", "/v1/admin/companies/nope", None).await,
        404,
        "not_found",
        "",
    );
    // max_companies = 3: the file's two and one more.
    add_company(&server, "initech").await;
    assert_error(
        post(
            Some(OPERATOR),
            json!({"id": "hooli", "name": "Hooli", "admin": admin}),
        )
        .await,
        409,
        "conflict",
        "max_companies",
    );
    assert_eq!(company_ids(&server).await, ["acme", "globex", "initech"]);
}

in_every_mode!(every_bad_company_request_gets_its_code);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_operator_token_companies_come_from_the_file_only() {
    let server = TestServer::start().await;
    assert_error(
        server
            .http("GET", "/v1/admin/companies", Some(ALICE), None)
            .await,
        403,
        "forbidden",
        "operator_token",
    );
    assert_error(
        server
            .http(
                "GET",
                "/v1/admin/companies",
                Some("operator-token-000001"),
                None,
            )
            .await,
        401,
        "unauthorized",
        "token",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_companies_the_operator_added_and_deleted() {
    let dir = TempDir::new("companies");
    let config = || {
        config_with(&format!(
            "{WITH_OPERATOR}\ndata_dir = \"{}\"",
            dir.path().display()
        ))
    };
    let server = TestServer::with_config(config()).await;
    let (_, peter) = add_company(&server, "initech").await;
    let (_, gone) = add_company(&server, "gone").await;
    let mut p = server.agent(&peter).await;
    let code = create_case(&mut p, "support").await["code"]
        .as_str()
        .unwrap()
        .to_string();
    drop(p);
    let (st, _) = operator(&server, "DELETE", "/v1/admin/companies/gone", None).await;
    assert_eq!(st, 204);
    server.stop().await;

    for round in 0..2 {
        let server = TestServer::with_config(config()).await;
        let mut expected = vec!["acme", "globex", "initech"];
        if round == 1 {
            expected.push("later");
        }
        assert_eq!(company_ids(&server).await, expected, "round {round}");
        let (st, case) = server
            .http("GET", &format!("/v1/cases/{code}"), Some(&peter), None)
            .await;
        assert_eq!(st, 200, "round {round}: {case}");
        assert_eq!(case["created_by"], "peter");
        let (st, _) = server.http("GET", "/v1/agents", Some(&gone), None).await;
        assert_eq!(st, 401, "round {round}");
        if round == 0 {
            // One added after a restart takes the next place.
            add_company(&server, "later").await;
        }
        server.stop().await;
    }
    let server = TestServer::with_config(config()).await;
    assert_eq!(
        company_ids(&server).await,
        ["acme", "globex", "initech", "later"]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_of_a_cluster_serves_a_company_the_operator_added() {
    let redis = crate::util::redis::RedisServer::start();
    let node = |name: &'static str| TestServer::node(&redis, name, WITH_OPERATOR);
    let a = node("a").await;
    let b = node("b").await;
    let (_, peter) = add_company(&a, "initech").await;
    // Known on b at once (a token it does not know makes it read the
    // registry), with the same data.
    let mut on_b = b.agent(&peter).await;
    let code = create_case(&mut on_b, "support").await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, case) = a
        .http("GET", &format!("/v1/cases/{code}"), Some(&peter), None)
        .await;
    assert_eq!(st, 200, "{case}");
    assert_eq!(company_ids(&b).await, ["acme", "globex", "initech"]);
    // The same id cannot be taken on another node.
    assert_error(
        operator(
            &b,
            "POST",
            "/v1/admin/companies",
            Some(json!({"id": "initech", "name": "x", "admin": {"id": "a", "name": "A"}})),
        )
        .await,
        409,
        "conflict",
        "initech",
    );
    // A node started later has it.
    let c = node("c").await;
    let (st, case) = c
        .http("GET", &format!("/v1/cases/{code}"), Some(&peter), None)
        .await;
    assert_eq!(st, 200, "{case}");
    // Deleted on c: peter's connection on b is closed.
    let (st, _) = operator(&c, "DELETE", "/v1/admin/companies/initech", None).await;
    assert_eq!(st, 204);
    assert_eq!(on_b.closed().await.0, Closed::Code(4500));
    assert_eq!(company_ids(&a).await, ["acme", "globex"]);
}
