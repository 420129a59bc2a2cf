//! [`PdActor`]: the actix shell around [`PdState`]. It runs on its own arbiter (thread), so
//! the fsync of PD's state file never stalls the stores' actors.

use crate::state::PdState;
use actix::{Actor, AsyncContext, Context, Handler, Message, MessageResult};
use regatta_proto::pdpb::{PdRequest, PdResponse, RegionWithLeader};

/// The placement driver as an actor.
pub struct PdActor {
    state: PdState,
}

impl PdActor {
    /// Wraps an opened state.
    pub fn new(state: PdState) -> Self {
        PdActor { state }
    }
}

impl Actor for PdActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // The region map is written lazily (see `PdState::flush_region_map`).
        ctx.run_interval(std::time::Duration::from_secs(1), |act, _| {
            act.state.flush_region_map();
        });
    }
}

/// One PD request; answered with its response.
pub struct PdCall(pub PdRequest);

impl Message for PdCall {
    type Result = PdResponse;
}

impl Handler<PdCall> for PdActor {
    type Result = MessageResult<PdCall>;

    fn handle(&mut self, msg: PdCall, _: &mut Context<Self>) -> MessageResult<PdCall> {
        MessageResult(self.state.handle(msg.0))
    }
}

/// Asks for the whole region map (for tools and tests).
pub struct AllRegions;

impl Message for AllRegions {
    type Result = Vec<RegionWithLeader>;
}

impl Handler<AllRegions> for PdActor {
    type Result = MessageResult<AllRegions>;

    fn handle(&mut self, _: AllRegions, _: &mut Context<Self>) -> MessageResult<AllRegions> {
        MessageResult(self.state.regions())
    }
}
