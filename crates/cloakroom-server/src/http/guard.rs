//! The service in front of the router. Every request passes its checks before routing (the
//! cookie-size limit, the cross-site check on unsafe methods, the body limit), and every answer
//! leaves with the headers all responses carry and is counted for `/metrics`.
//!
//! It is written as a plain [`Service`] around the router rather than with
//! `axum::middleware::from_fn` or `Router::layer`: those clone and box a service and box a future
//! on every request, which on the hottest routes cost more than the session check itself.

use axum::body::{Body, HttpBody};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request};
use axum::handler::Handler;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{BoxError, Router};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::{Layer, Service};

use super::error::ApiError;
use super::extract::CookieRenewal;
use super::metrics::{wall_ms, StoreFailed};
use super::{api, metrics, pages, routes, AppState, BODY_LIMIT, COOKIE_LIMIT};

type Limited = <DefaultBodyLimit as Layer<Router>>::Service;

/// The router behind the checks, for one connection (see [`Guarded::for_peer`]).
#[derive(Clone)]
pub struct Guarded {
    state: AppState,
    router: Router,
    /// The same router with the body limit, for requests that may carry a body.
    limited: Limited,
    peer: Option<SocketAddr>,
}

impl Guarded {
    /// Puts the checks in front of `router`.
    pub fn new(state: AppState, router: Router) -> Self {
        Self {
            state,
            limited: DefaultBodyLimit::max(BODY_LIMIT).layer(router.clone()),
            router,
            peer: None,
        }
    }

    /// The service for a connection from `peer` (handlers read it as `ConnectInfo`).
    pub fn for_peer(&self, peer: SocketAddr) -> Self {
        Self {
            peer: Some(peer),
            ..self.clone()
        }
    }

    /// A refusal before routing, if the request earns one.
    fn refusal(&self, req: &Request, cookie_bytes: usize) -> Option<Response> {
        if cookie_bytes > COOKIE_LIMIT {
            return Some(
                ApiError::new(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "cookies_too_large",
                    "the Cookie header is larger than 8 KiB",
                )
                .into_response(),
            );
        }
        if self
            .state
            .rules
            .refuses_cross_site(req.method(), req.headers())
        {
            return Some(if pages::wants_html(req.headers()) {
                pages::error_page(&ApiError::cross_origin()).into_response()
            } else {
                ApiError::cross_origin().into_response()
            });
        }
        None
    }
}

impl<B> Service<axum::http::Request<B>> for Guarded
where
    B: HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = GuardFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::http::Request<B>) -> GuardFuture {
        let mut req = req.map(Body::new);
        let route = metrics::route_of(req.uri().path());
        let (cookie_bytes, dotted) = req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .fold((0, false), |(n, dot), v| {
                (n + v.len(), dot || v.as_bytes().contains(&b'.'))
            });
        let after = After {
            state: self.state.clone(),
            route,
            // A slot for a renewed JWT cookie, only when a cookie could be one (JWTs have dots).
            renewal: dotted.then(CookieRenewal::default),
        };
        if let Some(refused) = self.refusal(&req, cookie_bytes) {
            return GuardFuture {
                inner: Inner::Refused(refused),
                after,
            };
        }
        if let Some(slot) = &after.renewal {
            req.extensions_mut().insert(slot.clone());
        }
        let hot = match (req.method(), req.uri().path()) {
            (&Method::GET, routes::WHOAMI) => Some(Hot::WhoAmI),
            (&Method::GET, routes::VERIFY) => Some(Hot::Verify),
            _ => None,
        };
        // Every handler but `whoami` may read the client's address.
        if let (Some(peer), false) = (self.peer, hot == Some(Hot::WhoAmI)) {
            req.extensions_mut().insert(ConnectInfo(peer));
        }
        let state = self.state.clone();
        let inner = match hot {
            // What a protected app or its proxy asks on every request goes straight to its
            // handler: the same handler and extractors the router would run, without the
            // router's per-request service clone and boxing (both routes are in the router too,
            // which serves their HEAD and wrong-method answers).
            Some(Hot::WhoAmI) => Inner::Direct(Handler::call(api::auth::whoami, req, state)),
            Some(Hot::Verify) => Inner::Direct(Handler::call(api::forward::verify, req, state)),
            None if matches!(*req.method(), Method::GET | Method::HEAD) => {
                Inner::Routed(self.router.call(req))
            }
            None => Inner::Routed(self.limited.call(req)),
        };
        GuardFuture { inner, after }
    }
}

/// The routes answered without the router.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hot {
    WhoAmI,
    Verify,
}

/// What [`Guarded`] answers with.
pub struct GuardFuture {
    inner: Inner,
    after: After,
}

enum Inner {
    Refused(Response),
    Direct(Pin<Box<dyn Future<Output = Response> + Send>>),
    Routed(<Router as Service<Request>>::Future),
}

/// What is done to every answer.
struct After {
    state: AppState,
    route: &'static str,
    renewal: Option<CookieRenewal>,
}

impl Future for GuardFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every part is Unpin: the router's future holds its state in a box.
        let this = self.get_mut();
        let res = match &mut this.inner {
            Inner::Refused(res) => std::mem::take(res),
            Inner::Direct(fut) => match fut.as_mut().poll(cx) {
                Poll::Ready(res) => res,
                Poll::Pending => return Poll::Pending,
            },
            Inner::Routed(fut) => match Pin::new(fut).poll(cx) {
                Poll::Ready(Ok(res)) => res,
                Poll::Ready(Err(never)) => match never {},
                Poll::Pending => return Poll::Pending,
            },
        };
        Poll::Ready(Ok(this.after.finish(res)))
    }
}

impl After {
    fn finish(&mut self, mut res: Response) -> Response {
        let renewed = self
            .renewal
            .take()
            .and_then(|r| r.0.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(cookie) = renewed.and_then(|c| HeaderValue::from_str(&c).ok()) {
            // Unless the handler already set or cleared the cookie (login, logout).
            if !res.headers().contains_key(header::SET_COOKIE) {
                res.headers_mut().append(header::SET_COOKIE, cookie);
            }
        }
        // Every answer: no sniffing, no caching unless the handler says otherwise, and a policy
        // that loads nothing and is framed nowhere (pages set their own, with the referrer
        // policy and `X-Frame-Options` that only HTML needs).
        let h = res.headers_mut();
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.entry(header::CONTENT_SECURITY_POLICY)
            .or_insert(HeaderValue::from_static(
                "default-src 'none'; frame-ancestors 'none'",
            ));
        h.entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
        if self.state.hsts {
            h.insert(
                header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=31536000; includeSubDomains"),
            );
        }
        self.state.metrics.count(self.route, res.status().as_u16());
        if res.extensions().get::<StoreFailed>().is_some() {
            self.state.metrics.store_failed(wall_ms());
        }
        res
    }
}
