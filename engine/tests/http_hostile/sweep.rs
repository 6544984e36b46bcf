//! Bytes that are not HTTP at all, and the sweep that sends every case and checks each answer.

use super::*;

/// Bytes that are not HTTP/1.1 at all.
fn malformed() -> Vec<Case> {
    let unparseable: [&[u8]; 18] = [
        b"GET /healthz?a=\xff HTTP/1.1\r\n\r\n",
        b"GET /v1/requests/\xc0\x80 HTTP/1.1\r\n\r\n",
        b"garbage\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n: empty\r\n\r\n",
        b"GET /healthz HTTP/9.9\r\n\r\n",
        b"GET /healthz\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n Host: folded\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"G\0T /healthz HTTP/1.1\r\n\r\n",
        b"GET /he\x7flthz HTTP/1.1\r\n\r\n",
        b"GET http://[::1 HTTP/1.1\r\n\r\n",
    ];
    let mut cases: Vec<Case> = unparseable
        .iter()
        .map(|bytes| Case {
            name: format!("malformed {:?}", String::from_utf8_lossy(bytes)),
            bytes: bytes.to_vec(),
            head: false,
            expect: Expect::Unparseable,
        })
        .collect();
    let mut huge_header = b"GET /healthz HTTP/1.1\r\nX-Huge: ".to_vec();
    huge_header.extend(std::iter::repeat_n(b'a', 1024 * 1024));
    huge_header.extend_from_slice(b"\r\n\r\n");
    cases.push(Case {
        name: "malformed 1 MiB header".to_owned(),
        bytes: huge_header,
        head: false,
        expect: Expect::Unparseable,
    });
    let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(70 * 1024));
    cases.push(Case {
        name: "malformed 70 KiB target".to_owned(),
        bytes: long_target.into_bytes(),
        head: false,
        expect: Expect::Unparseable,
    });
    // Parsed by hyper, so Lethe's to answer.
    for (text, status) in [
        ("GET /healthz HTTP/1.1\n\n", 200),
        ("GET /healthz HTTP/1.0\r\n\r\n", 200),
        ("get /healthz HTTP/1.1\r\nConnection: close\r\n\r\n", 405),
        (
            "GET http://example.com/healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
            200,
        ),
        ("GET * HTTP/1.1\r\nConnection: close\r\n\r\n", 404),
        ("OPTIONS * HTTP/1.1\r\nConnection: close\r\n\r\n", 404),
        (
            "GET /healthz?a=%C0 HTTP/1.1\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "GET /healthz?a=%G0 HTTP/1.1\r\nConnection: close\r\n\r\n",
            200,
        ),
    ] {
        cases.push(Case {
            name: format!("parsed {text:?}"),
            bytes: text.as_bytes().to_vec(),
            head: false,
            expect: Expect::Status(status),
        });
    }
    cases
}

async fn sweep(store: TestStore, auth: Auth) {
    let server = start(&store, auth != Auth::Off).await;
    let mut rng = StdRng::seed_from_u64(0x1e7e);
    let mut all = cases(&server, auth, &mut rng);
    all.extend(malformed());
    assert!(all.len() >= 500, "only {} cases", all.len());
    // A few connections at a time; each case's verdict is its own, so the order of answers
    // does not matter.
    let address = server.address;
    let failures: Vec<String> = futures::stream::iter(&all)
        .map(|case| async move {
            let reply = exchange(address, &case.bytes, case.head).await;
            verdict(case, reply.as_ref(), auth)
                .err()
                .map(|wrong| format!("{}: {wrong}", case.name))
        })
        .buffer_unordered(8)
        .filter_map(|failure| async move { failure })
        .collect()
        .await;
    assert!(
        failures.is_empty(),
        "{} of {} cases went wrong ({auth:?}):\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
    // Still serving, and still right.
    let reply = exchange(
        server.address,
        &request("GET", b"/healthz", &[], b""),
        false,
    )
    .await
    .expect("an answer after the sweep");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, b"ok");
}

async fn hostile_clients_without_auth(store: TestStore) {
    sweep(store, Auth::Off).await;
}

async fn hostile_clients_with_a_token(store: TestStore) {
    sweep(store, Auth::Token).await;
}

async fn hostile_clients_without_a_token(store: TestStore) {
    sweep(store, Auth::Missing).await;
}
support::backends!(
    hostile_clients_without_auth,
    hostile_clients_with_a_token,
    hostile_clients_without_a_token,
);
