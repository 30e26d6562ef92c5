//! The DNS request handler hickory-server calls for every UDP and TCP query: the cluster
//! answer from the current snapshot, or the forwarder's.

use std::sync::Arc;

use async_trait::async_trait;
use hickory_proto::op::{Edns, Header, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use tokio::sync::watch;

use crate::answer::{self, Outcome, Response};
use crate::forward::Forwarder;
use crate::records::Snapshot;

/// The largest UDP payload we advertise with EDNS (what CoreDNS and most resolvers use).
const MAX_UDP_PAYLOAD: u16 = 1232;

/// Answers queries from the latest snapshot and the forwarder.
pub struct Handler {
    snapshot: watch::Receiver<Arc<Snapshot>>,
    forwarder: Forwarder,
}

impl Handler {
    /// A handler reading `snapshot` (updated by the watch task) and forwarding the rest.
    pub fn new(snapshot: watch::Receiver<Arc<Snapshot>>, forwarder: Forwarder) -> Handler {
        Handler {
            snapshot,
            forwarder,
        }
    }

    /// The response to one question.
    pub async fn respond(&self, name: &Name, qtype: RecordType) -> Response {
        let snap = self.snapshot.borrow().clone();
        match answer::answer(&snap, name, qtype) {
            Outcome::Answer {
                mut response,
                chase,
            } => {
                let Some(target) = chase else {
                    return response;
                };
                match self.forwarder.resolve(&target, qtype).await {
                    Ok(up) => response.answers.extend(up.answers),
                    Err(e) => {
                        // CoreDNS drops a CNAME it could not complete upstream.
                        tracing::debug!(%target, error = %e, "external name not resolved");
                        response
                            .answers
                            .retain(|r| !matches!(r.data(), RData::CNAME(c) if c.0 == target));
                        if response.answers.is_empty() {
                            return answer::negative(&snap, ResponseCode::NoError);
                        }
                    }
                }
                response
            }
            Outcome::Forward => match self.forwarder.resolve(name, qtype).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(%name, %qtype, error = %e, "forwarding failed");
                    Response::empty(ResponseCode::ServFail)
                }
            },
        }
    }
}

#[async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut header = Header::response_from_request(request.header());
        header.set_recursion_available(true);
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = request.edns() {
            let mut e = Edns::new();
            e.set_max_payload(edns.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            builder.edns(e);
        }
        let query = match request.request_info() {
            Ok(info)
                if request.message_type() == MessageType::Query
                    && request.op_code() == OpCode::Query =>
            {
                info.query.original().clone()
            }
            Ok(_) => {
                return send_error(builder, header, ResponseCode::NotImp, response_handle).await
            }
            Err(_) => {
                return send_error(builder, header, ResponseCode::FormErr, response_handle).await
            }
        };
        let response = self.respond(query.name(), query.query_type()).await;
        header.set_response_code(response.rcode);
        header.set_authoritative(response.authoritative);
        let message = builder.build(
            header,
            response.answers.iter(),
            std::iter::empty(),
            response.authority.iter(),
            response.additionals.iter(),
        );
        match response_handle.send_response(message).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "sending a DNS response failed");
                header.set_response_code(ResponseCode::ServFail);
                header.into()
            }
        }
    }
}

async fn send_error<R: ResponseHandler>(
    builder: MessageResponseBuilder<'_>,
    mut header: Header,
    rcode: ResponseCode,
    mut handle: R,
) -> ResponseInfo {
    header.set_response_code(rcode);
    let message = builder.build_no_records(header);
    match handle.send_response(message).await {
        Ok(info) => info,
        Err(_) => header.into(),
    }
}
