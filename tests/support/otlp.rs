//! Test OTLP receivers: gRPC (`TraceService/Export`) and HTTP (`POST /v1/traces`), recording
//! every span that arrives with its resource's service name.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;

/// One span as received (ids in lower-case hex, `parent` empty for a root span).
#[derive(Debug, Clone)]
pub struct Span {
    pub service: String,
    pub name: String,
    pub trace: String,
    pub span: String,
    pub parent: String,
}

/// Every span received so far.
pub type Seen = Arc<Mutex<Vec<Span>>>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn record(seen: &Seen, req: &ExportTraceServiceRequest) {
    for rs in &req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| match &v.value {
                Some(Value::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                seen.lock().unwrap().push(Span {
                    service: service.clone(),
                    name: span.name.clone(),
                    trace: hex(&span.trace_id),
                    span: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                });
            }
        }
    }
}

struct Grpc(Seen);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        record(&self.0, request.get_ref());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A gRPC receiver on a free loopback port.
pub async fn grpc() -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Grpc(seen.clone())))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, seen)
}

/// An HTTP (`http/protobuf`) receiver on a free loopback port.
pub async fn http() -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let addr = super::http::serve_http1(move |req: hyper::Request<hyper::body::Incoming>| {
        let s = s.clone();
        async move {
            use http_body_util::BodyExt;
            let ok = req.uri().path() == "/v1/traces";
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            if ok && let Ok(r) = ExportTraceServiceRequest::decode(body) {
                record(&s, &r);
            }
            hyper::Response::builder()
                .status(if ok { 200 } else { 404 })
                .header("content-type", "application/x-protobuf")
                .body(http_body_util::Full::new(bytes::Bytes::from(
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )))
                .unwrap()
        }
    })
    .await;
    (addr, seen)
}
