//! Calls that bind or serve on a TCP/UDP port, and the port when it is a fixed constant.

use rustpython_parser::ast::{self, Constant, Expr};

use super::scope::ScopeId;
use super::sinks::{arg, kwarg, last_segment};
use super::value::Evaluator;

impl<'a> Evaluator<'_, 'a> {
    /// A fixed, non-zero port this call binds or serves on.
    pub fn bound_port(&self, call: &'a ast::ExprCall, scope: ScopeId) -> Option<(i64, String)> {
        let q = self.qualname(&call.func, scope);
        let name = match (&q, &*call.func) {
            (Some(q), _) => last_segment(q).to_owned(),
            (None, Expr::Attribute(a)) => a.attr.to_string(),
            _ => return None,
        };
        let from_addr = |e: Option<&'a Expr>| -> Option<i64> {
            let (elts, s) = self.tuple(e?, scope)?;
            // (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6. Other shapes are
            // other families (AF_CAN, AF_TIPC), and a host that is a number or a socket constant
            // is AF_VSOCK or similar, where "port" means something else.
            if !matches!(elts.len(), 2 | 4) {
                return None;
            }
            let host = &elts[0];
            if matches!(
                host,
                Expr::Constant(ast::ExprConstant {
                    value: Constant::Int(_),
                    ..
                })
            ) || self
                .qualname(host, s)
                .is_some_and(|q| q.starts_with("socket."))
            {
                return None;
            }
            self.int(elts.get(1)?, s)
        };
        let from_int = |e: Option<&Expr>| e.and_then(|e| self.int(e, scope));
        let port = match name.as_str() {
            "bind" => from_addr(call.args.first()),
            "create_server" if q.as_deref() == Some("socket.create_server") => {
                from_addr(arg(call, 0, "address"))
            }
            "make_server" | "run_simple" => from_int(arg(call, 1, "port")),
            "start_server" | "create_server" | "TCPSite" => from_int(arg(call, 2, "port")),
            "create_datagram_endpoint" => from_addr(kwarg(call, "local_addr")),
            "run" | "run_app" | "serve" | "listen" => from_int(kwarg(call, "port")),
            n if n.ends_with("Server") => from_addr(
                call.args
                    .first()
                    .or_else(|| kwarg(call, "server_address"))
                    .or_else(|| kwarg(call, "address")),
            ),
            _ => None,
        }?;
        // Ports below 1024 need privileges no test run has: a test naming one is testing an
        // error path or talking to a mock, not binding it.
        (port >= 1024).then_some((port, name))
    }
}
