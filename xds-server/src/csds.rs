//! Envoy's Client Status Discovery Service: what each node was served and
//! whether it ACKed it, in the standard `envoy.service.status.v3` shape.

use std::pin::Pin;

use envoy_types::pb::envoy::admin::v3::{ClientResourceStatus, UpdateFailureState};
use envoy_types::pb::envoy::service::status::v3::{
    ClientConfig, ClientStatusRequest, ClientStatusResponse, ConfigStatus,
    client_config::GenericXdsConfig,
    client_status_discovery_service_server::ClientStatusDiscoveryService,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::cache::SnapshotCache;
use crate::nodes::{NodeState, Nodes};
use crate::status::{SyncState, node_resources, sync_state, timestamp};

/// The CSDS gRPC service.
#[derive(Clone, Debug)]
pub struct CsdsService {
    cache: SnapshotCache,
    nodes: Nodes,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl CsdsService {
    pub(crate) fn new(
        cache: SnapshotCache,
        nodes: Nodes,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            cache,
            nodes,
            shutdown,
        }
    }

    fn answer(&self, req: &ClientStatusRequest) -> Result<ClientStatusResponse, Status> {
        let mut config = Vec::new();
        for node in self.nodes.list().into_iter().filter(|n| n.connected) {
            if !matches(req, &node)? {
                continue;
            }
            config.push(self.client_config(&node, req.exclude_resource_contents));
        }
        Ok(ClientStatusResponse { config })
    }

    fn client_config(&self, node: &NodeState, exclude_contents: bool) -> ClientConfig {
        let snapshot = self.cache.snapshot(&node.group);
        let mut generic = Vec::new();
        for r in node_resources(node, &snapshot, None, false) {
            let t = node.types.get(r.type_url());
            let state = sync_state(node, r);
            let (config_status, client_status) = match state {
                SyncState::Acked => (ConfigStatus::Synced, ClientResourceStatus::Acked),
                SyncState::Nacked => (ConfigStatus::Error, ClientResourceStatus::Nacked),
                SyncState::Sent => (ConfigStatus::Stale, ClientResourceStatus::Requested),
                SyncState::NotSent => (ConfigStatus::NotSent, ClientResourceStatus::Requested),
            };
            let error_state = match (state, t.and_then(|t| t.last_nack.as_ref())) {
                (SyncState::Nacked, Some(n)) => Some(UpdateFailureState {
                    failed_configuration: None,
                    last_update_attempt: Some(timestamp(n.at)),
                    details: n.error.clone(),
                    version_info: n.version.clone(),
                }),
                _ => None,
            };
            generic.push(GenericXdsConfig {
                type_url: r.type_url().to_string(),
                name: r.name().to_string(),
                version_info: r.version().to_string(),
                xds_config: (!exclude_contents).then(|| crate::redact::redacted(r).body),
                last_updated: t.and_then(|t| t.acked_at).map(timestamp),
                config_status: config_status as i32,
                client_status: client_status as i32,
                error_state,
                is_static_resource: false,
            });
        }
        ClientConfig {
            node: Some(node.node.clone()),
            generic_xds_configs: generic,
            ..Default::default()
        }
    }
}

fn matches(req: &ClientStatusRequest, node: &NodeState) -> Result<bool, Status> {
    if req.node_matchers.is_empty() {
        return Ok(true);
    }
    for m in &req.node_matchers {
        if !m.node_metadatas.is_empty() {
            return Err(Status::unimplemented(
                "CSDS node_matchers.node_metadatas is not supported; match on node_id",
            ));
        }
        match &m.node_id {
            None => return Ok(true),
            Some(sm) if string_matches(sm, &node.node.id)? => return Ok(true),
            Some(_) => {}
        }
    }
    Ok(false)
}

fn string_matches(m: &StringMatcher, s: &str) -> Result<bool, Status> {
    let (value, pattern) = if m.ignore_case {
        (s.to_lowercase(), m.match_pattern.clone().map(lower))
    } else {
        (s.to_string(), m.match_pattern.clone())
    };
    Ok(match pattern {
        None => true,
        Some(MatchPattern::Exact(e)) => value == e,
        Some(MatchPattern::Prefix(p)) => value.starts_with(&p),
        Some(MatchPattern::Suffix(p)) => value.ends_with(&p),
        Some(MatchPattern::Contains(p)) => value.contains(&p),
        Some(_) => {
            return Err(Status::unimplemented(
                "CSDS node_id matcher: only exact, prefix, suffix and contains are supported",
            ));
        }
    })
}

fn lower(p: MatchPattern) -> MatchPattern {
    match p {
        MatchPattern::Exact(s) => MatchPattern::Exact(s.to_lowercase()),
        MatchPattern::Prefix(s) => MatchPattern::Prefix(s.to_lowercase()),
        MatchPattern::Suffix(s) => MatchPattern::Suffix(s.to_lowercase()),
        MatchPattern::Contains(s) => MatchPattern::Contains(s.to_lowercase()),
        other => other,
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl ClientStatusDiscoveryService for CsdsService {
    type StreamClientStatusStream = BoxStream<ClientStatusResponse>;

    async fn stream_client_status(
        &self,
        request: Request<Streaming<ClientStatusRequest>>,
    ) -> Result<Response<Self::StreamClientStatusStream>, Status> {
        let this = self.clone();
        let out = request
            .into_inner()
            .map(move |req| req.and_then(|r| this.answer(&r)))
            .take_until(crate::ads::shutting_down(self.shutdown.clone()));
        Ok(Response::new(Box::pin(out)))
    }

    async fn fetch_client_status(
        &self,
        request: Request<ClientStatusRequest>,
    ) -> Result<Response<ClientStatusResponse>, Status> {
        self.answer(request.get_ref()).map(Response::new)
    }
}
