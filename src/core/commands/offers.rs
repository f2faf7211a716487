//! An agent's answers to an offer (`offer_timeout`): `accept` takes the
//! case, `decline` passes it to the next eligible agent.

use chrono::Utc;

use crate::case::{CaseView, SessionCode};
use crate::directory::Agent;
use crate::error::{Error, Result};

use super::super::Broker;
use super::super::change::{Change, OfferOutcome};
use super::super::record::AssignedBy;
use super::super::shard::Locked;
use super::parse_code;

impl Broker {
    /// `accept`: the agent the case is offered to takes it, as an
    /// automatic assignment, before the offer runs out.
    pub fn accept(&self, agent: &Agent, code: &str) -> Result<CaseView> {
        self.writable()?;
        let code = parse_code(code)?;
        let mut cx = self.lock(agent.company_index);
        offered_to(&cx, &code, agent)?;
        cx.apply(Change::Assigned {
            code,
            to: agent.index,
            by: AssignedBy::Auto,
            at: Utc::now(),
        });
        self.shared.metrics.offer("accepted");
        let view = cx.case(&code)?.view(&cx.company);
        // Free of its offer, the agent may be offered the next case.
        cx.dispatch();
        Ok(view)
    }

    /// `decline`: the agent passes on the case; it is offered to the next
    /// eligible agent, never to this one again while another is eligible.
    pub fn decline(&self, agent: &Agent, code: &str) -> Result<CaseView> {
        self.writable()?;
        let code = parse_code(code)?;
        let mut cx = self.lock(agent.company_index);
        offered_to(&cx, &code, agent)?;
        cx.apply(Change::OfferEnded {
            code,
            agent: agent.index,
            outcome: OfferOutcome::Declined,
            at: Utc::now(),
        });
        cx.dispatch();
        Ok(cx.case(&code)?.view(&cx.company))
    }
}

/// Checks that `code` is offered to `agent` now: `not_found` for a case the
/// agent may not see, `conflict` when no offer of it waits for the agent.
fn offered_to(cx: &Locked<'_>, code: &SessionCode, agent: &Agent) -> Result<()> {
    let c = match cx.st.cases.get(code) {
        Some(c) if c.ext.offer.as_ref().is_some_and(|o| o.agent == agent.id) => c,
        _ => {
            cx.visible(code, agent)?;
            return Err(Error::conflict("no offer of this case waits for you"));
        }
    };
    let offer = c.ext.offer.as_ref().expect("checked above");
    if offer.expires_at <= Utc::now() {
        return Err(Error::conflict("the offer ran out"));
    }
    Ok(())
}
