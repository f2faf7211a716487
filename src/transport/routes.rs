//! The HTTP routes as one table: the router is built from it, and it can
//! be listed, so a test holds the OpenAPI document to exactly these routes.

use axum::Router;
use axum::handler::Handler;
use axum::routing::{MethodFilter, MethodRouter, on};

use crate::app::App;

/// One method on one path, with its handler.
pub struct Route {
    /// The method's name, upper case (`GET`).
    pub method: &'static str,
    /// The path as axum matches it (`/v1/cases/{code}`).
    pub path: &'static str,
    handler: MethodRouter<App>,
}

impl Route {
    fn new<H: Handler<T, App>, T: 'static>(
        method: &'static str,
        filter: MethodFilter,
        path: &'static str,
        handler: H,
    ) -> Route {
        Route {
            method,
            path,
            handler: on(filter, handler),
        }
    }

    /// `GET` (and so `HEAD`) on `path`.
    pub fn get<H: Handler<T, App>, T: 'static>(path: &'static str, handler: H) -> Route {
        Route::new("GET", MethodFilter::GET, path, handler)
    }

    pub fn post<H: Handler<T, App>, T: 'static>(path: &'static str, handler: H) -> Route {
        Route::new("POST", MethodFilter::POST, path, handler)
    }

    pub fn patch<H: Handler<T, App>, T: 'static>(path: &'static str, handler: H) -> Route {
        Route::new("PATCH", MethodFilter::PATCH, path, handler)
    }

    pub fn delete<H: Handler<T, App>, T: 'static>(path: &'static str, handler: H) -> Route {
        Route::new("DELETE", MethodFilter::DELETE, path, handler)
    }
}

/// Adds every route of `table` to `router`; methods on one path merge.
pub fn register(router: Router<App>, table: Vec<Route>) -> Router<App> {
    table
        .into_iter()
        .fold(router, |router, r| router.route(r.path, r.handler))
}
