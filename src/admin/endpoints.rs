//! The admin API's endpoint table: the one list that the router, the 405 answers, the
//! `GET /` index and the contract test (`deploy/admin-openapi.yaml`) are all made from.

/// Which server a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// Admin (`listen.admin`, loopback by default): reads and mutations.
    Admin,
    /// Health (`listen.health`, reachable by the kubelet and Prometheus): read-only.
    Health,
}

/// What an endpoint does; the router calls the handler it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `GET /`.
    Index,
    /// `GET /live`.
    Live,
    /// `GET /ready`.
    Ready,
    /// `GET /route`.
    GetRoute,
    /// `PUT /route`.
    PutRoute,
    /// `GET /listeners`.
    Listeners,
    /// `POST /credentials/check`.
    CheckCredentials,
    /// `GET /metrics`.
    Metrics,
    /// `GET /config`.
    Config,
    /// `GET /connections`.
    Connections,
    /// `GET /preflight?to=…`.
    Preflight,
    /// `GET /log-level`.
    GetLogLevel,
    /// `PUT /log-level`.
    PutLogLevel,
    /// `POST /drain`.
    Drain,
    /// `POST /shutdown`.
    Shutdown,
}

/// One endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// HTTP method.
    pub method: &'static str,
    /// Path, exact.
    pub path: &'static str,
    /// Also served on the health port (reads only).
    pub on_health: bool,
    /// For a mutation: its `endpoint` label in `rmq_sidecar_admin_mutations_total`. Only
    /// mutations need authorization (loopback, or the bearer token).
    pub mutation: Option<&'static str>,
    /// One line for `GET /`.
    pub about: &'static str,
    /// The handler.
    pub action: Action,
}

/// Every endpoint, in the order `GET /` lists them.
pub const ENDPOINTS: &[Endpoint] = &[
    read("/", false, "this list", Action::Index),
    read("/live", true, "200 while the process runs", Action::Live),
    read(
        "/ready",
        true,
        "200 once the target's name server answered once",
        Action::Ready,
    ),
    read(
        "/route",
        true,
        "target, generation, upstream health",
        Action::GetRoute,
    ),
    write(
        "PUT",
        "/route",
        "route",
        "switch: {\"target\":\"old\"|\"new\"}",
        Action::PutRoute,
    ),
    read(
        "/listeners",
        false,
        "upstream broker -> local listener map",
        Action::Listeners,
    ),
    write(
        "POST",
        "/credentials/check",
        "credentials_check",
        "run the credential check of every cluster now",
        Action::CheckCredentials,
    ),
    read(
        "/metrics",
        true,
        "Prometheus metrics (also on the health port)",
        Action::Metrics,
    ),
    read(
        "/config",
        false,
        "effective configuration, secrets redacted",
        Action::Config,
    ),
    read(
        "/connections",
        false,
        "open app connections by listener and upstream",
        Action::Connections,
    ),
    read(
        "/preflight",
        false,
        "the pod's topics and groups checked against a cluster: ?to=new|old",
        Action::Preflight,
    ),
    read(
        "/log-level",
        false,
        "the log filter in force",
        Action::GetLogLevel,
    ),
    write(
        "PUT",
        "/log-level",
        "log_level",
        "change the log filter: {\"filter\":\"debug\"}",
        Action::PutLogLevel,
    ),
    write(
        "POST",
        "/drain",
        "drain",
        "stop accepting app connections, close idle ones",
        Action::Drain,
    ),
    write(
        "POST",
        "/shutdown",
        "shutdown",
        "drain and exit (only when admin.enable_shutdown)",
        Action::Shutdown,
    ),
];

const fn read(
    path: &'static str,
    on_health: bool,
    about: &'static str,
    action: Action,
) -> Endpoint {
    Endpoint {
        method: "GET",
        path,
        on_health,
        mutation: None,
        about,
        action,
    }
}

const fn write(
    method: &'static str,
    path: &'static str,
    label: &'static str,
    about: &'static str,
    action: Action,
) -> Endpoint {
    Endpoint {
        method,
        path,
        on_health: false,
        mutation: Some(label),
        about,
        action,
    }
}

/// What the router does with a method and a path on a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Serve this endpoint.
    Serve(&'static Endpoint),
    /// The path exists on this port, not with this method (405 with `Allow`).
    WrongMethod,
    /// No such path on this port (404).
    NotFound,
}

/// Routes `method` `path` on `port`.
pub fn route(port: Port, method: &str, path: &str) -> Route {
    let on_port = |e: &&Endpoint| e.path == path && (port == Port::Admin || e.on_health);
    let mut known = false;
    for e in ENDPOINTS.iter().filter(on_port) {
        if e.method == method {
            return Route::Serve(e);
        }
        known = true;
    }
    if known {
        Route::WrongMethod
    } else {
        Route::NotFound
    }
}

/// The methods `path` answers on `port` (the `Allow` header of a 405).
pub fn allowed(port: Port, path: &str) -> Vec<&'static str> {
    ENDPOINTS
        .iter()
        .filter(|e| e.path == path && (port == Port::Admin || e.on_health))
        .map(|e| e.method)
        .collect()
}

/// The paths served on the health port.
pub fn health_paths() -> Vec<&'static str> {
    ENDPOINTS
        .iter()
        .filter(|e| e.on_health)
        .map(|e| e.path)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_is_reachable_and_only_reads_reach_the_health_port() {
        for e in ENDPOINTS {
            assert_eq!(
                route(Port::Admin, e.method, e.path),
                Route::Serve(e),
                "{} {}",
                e.method,
                e.path
            );
            let on_health = route(Port::Health, e.method, e.path);
            if e.on_health {
                assert!(
                    e.mutation.is_none(),
                    "{} is a mutation on the health port",
                    e.path
                );
                assert_eq!(on_health, Route::Serve(e));
            } else {
                assert_ne!(on_health, Route::Serve(e), "{} {}", e.method, e.path);
            }
        }
        let mut seen = std::collections::HashSet::new();
        for e in ENDPOINTS {
            assert!(
                seen.insert((e.method, e.path)),
                "{} {} listed twice",
                e.method,
                e.path
            );
            assert_eq!(
                e.mutation.is_some(),
                e.method != "GET",
                "{} {}: mutations are exactly the non-GET endpoints",
                e.method,
                e.path
            );
        }
    }

    #[test]
    fn unknown_methods_and_paths() {
        assert_eq!(route(Port::Admin, "DELETE", "/route"), Route::WrongMethod);
        assert_eq!(allowed(Port::Admin, "/route"), vec!["GET", "PUT"]);
        assert_eq!(allowed(Port::Health, "/route"), vec!["GET"]);
        assert_eq!(route(Port::Health, "PUT", "/route"), Route::WrongMethod);
        assert_eq!(route(Port::Health, "GET", "/config"), Route::NotFound);
        assert_eq!(route(Port::Admin, "GET", "/route/extra"), Route::NotFound);
        assert_eq!(
            health_paths(),
            vec!["/live", "/ready", "/route", "/metrics"]
        );
    }
}
