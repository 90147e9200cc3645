use super::{assert_clean, assert_flags};
use crate::RuleId::FixedPort as R;

#[test]
fn flags_socket_bind_on_fixed_port() {
    assert_flags(
        R,
        r#"
        import socket
        def test_bind():
            s = socket.socket()
            s.bind(("127.0.0.1", 8080))  # <-
    "#,
    );
}

#[test]
fn flags_http_server_on_module_constant_port() {
    assert_flags(
        R,
        r#"
        from http.server import HTTPServer, SimpleHTTPRequestHandler
        PORT = 8000
        def test_serve():
            httpd = HTTPServer(("", PORT), SimpleHTTPRequestHandler)  # <-
    "#,
    );
}

#[test]
fn flags_app_run_and_make_server() {
    assert_flags(
        R,
        r#"
        def test_flask(app):
            app.run(host="localhost", port=5000)  # <-
    "#,
    );
    assert_flags(
        R,
        r#"
        from wsgiref.simple_server import make_server
        def test_wsgi(app):
            srv = make_server("localhost", 8051, app)  # <-
    "#,
    );
}

#[test]
fn flags_asyncio_start_server_and_address_variable() {
    assert_flags(
        R,
        r#"
        import asyncio
        async def test_srv(handler):
            server = await asyncio.start_server(handler, "127.0.0.1", 8888)  # <-
    "#,
    );
    assert_flags(
        R,
        r#"
        import socket
        ADDR = ("localhost", 9999)
        def test_udp():
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(ADDR)  # <-
    "#,
    );
}

#[test]
fn port_zero_is_fine() {
    assert_clean(
        R,
        r#"
        import socket
        from http.server import HTTPServer
        def test_bind():
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            httpd = HTTPServer(("localhost", 0), Handler)
            port = httpd.server_address[1]
    "#,
    );
}

#[test]
fn connecting_to_a_fixed_port_is_not_binding() {
    assert_clean(
        R,
        r#"
        import socket, http.client
        def test_client():
            s = socket.create_connection(("localhost", 8080))
            s.connect(("127.0.0.1", 8080))
            conn = http.client.HTTPConnection("localhost", port=8080)
            requests.get("http://localhost:8000/")
    "#,
    );
}

#[test]
fn ports_from_free_port_helpers_are_fine() {
    assert_clean(
        R,
        r#"
        import socket
        def test_free(unused_tcp_port):
            s = socket.socket()
            s.bind(("127.0.0.1", unused_tcp_port))
            port = find_free_port()
            app.run(port=port)
            s.listen(5)
    "#,
    );
}

#[test]
fn privileged_ports_and_other_families_are_not_bindings() {
    assert_clean(
        R,
        r#"
        import socket
        def test_mocked(loop, app):
            loop.create_server(MyProto, "example.com", 80)
            make_server("", 80, app)
            s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
            s.bind((socket.VMADDR_CID_ANY, 1234))
            s.bind(("vcan0", 0x123, 0x456))
            with pytest.raises(OSError):
                s.bind(("localhost", 8080))
    "#,
    );
}
