//! Integration tests: a real broker on 127.0.0.1:0, real WebSocket and HTTP
//! clients, one test binary.

mod util;

#[path = "integration/admin.rs"]
mod admin;
#[path = "integration/admin_companies.rs"]
mod admin_companies;
#[path = "integration/admin_groups.rs"]
mod admin_groups;
#[path = "integration/assignment.rs"]
mod assignment;
#[path = "integration/bad_input.rs"]
mod bad_input;
#[path = "integration/cluster.rs"]
mod cluster;
#[path = "integration/disk_full.rs"]
mod disk_full;
#[path = "integration/durability.rs"]
mod durability;
#[path = "integration/feed.rs"]
mod feed;
#[path = "integration/first_day.rs"]
mod first_day;
#[path = "integration/golden.rs"]
mod golden;
#[path = "integration/helpers.rs"]
mod helpers;
#[path = "integration/hostile.rs"]
mod hostile;
#[path = "integration/hours.rs"]
mod hours;
#[path = "integration/http_api.rs"]
mod http_api;
#[path = "integration/line.rs"]
mod line;
#[path = "integration/offers.rs"]
mod offers;
#[path = "integration/openapi.rs"]
mod openapi;
#[path = "integration/openapi_answers.rs"]
mod openapi_answers;
#[path = "integration/pages.rs"]
mod pages;
#[path = "integration/queue.rs"]
mod queue;
#[path = "integration/routing.rs"]
mod routing;
#[path = "integration/screen.rs"]
mod screen;
#[path = "integration/sessions.rs"]
mod sessions;
#[path = "integration/sla.rs"]
mod sla;
#[path = "integration/smoke.rs"]
mod smoke;
#[path = "integration/stats.rs"]
mod stats;
#[path = "integration/transfer.rs"]
mod transfer;
#[path = "integration/webhooks.rs"]
mod webhooks;
