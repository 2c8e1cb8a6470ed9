//! The HTTP-01 responder answers only GET/HEAD of a published token, 404 for anything else.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use certkeeper::challenge::http01::{Tokens, bind, serve};

fn request(port: u16, raw: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(raw.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

#[test]
fn serves_only_published_tokens() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(async { bind("127.0.0.1:0".parse().unwrap()) })
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let tokens = Tokens::default();
    runtime.spawn(serve(
        listener,
        tokens.clone(),
        None,
        std::future::pending(),
    ));
    let mut publisher = tokens.publisher();
    runtime
        .block_on(publisher.publish("tok-EN_1", "tok-EN_1.thumbprint"))
        .unwrap();

    let get = |path: &str| {
        request(
            port,
            &format!("GET {path} HTTP/1.1\r\nHost: media.example.com\r\n\r\n"),
        )
    };
    let ok = get("/.well-known/acme-challenge/tok-EN_1");
    assert!(
        ok.starts_with("HTTP/1.1 200") && ok.ends_with("tok-EN_1.thumbprint"),
        "{ok}"
    );
    assert!(
        ok.to_lowercase().contains("connection: close"),
        "no keep-alive: {ok}"
    );
    let head = request(
        port,
        "HEAD /.well-known/acme-challenge/tok-EN_1 HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(
        head.starts_with("HTTP/1.1 200") && !head.contains("thumbprint"),
        "{head}"
    );
    for path in [
        "/",
        "/.well-known/acme-challenge/unknown",
        "/.well-known/acme-challenge/../../etc/passwd",
        "/.well-known/acme-challenge/tok-EN_1/extra",
        "/.well-known/acme-challenge/",
    ] {
        assert!(get(path).starts_with("HTTP/1.1 404"), "{path}");
    }
    let post = request(
        port,
        "POST /.well-known/acme-challenge/tok-EN_1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert!(post.starts_with("HTTP/1.1 404"), "{post}");

    drop(publisher);
    assert!(
        get("/.well-known/acme-challenge/tok-EN_1").starts_with("HTTP/1.1 404"),
        "withdrawn"
    );
    let busy = bind(format!("127.0.0.1:{port}").parse().unwrap());
    let err = busy.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("another process holds the port"), "{err}");
}
