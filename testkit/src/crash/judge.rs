//! The verdict on one recovered case: [`judge`] compares what the
//! restarted broker shows of a case with the log of its changes and counts
//! the acknowledged changes that are lost, tells whether the unanswered
//! last change shows too, and lists states nobody asked for.

use super::{CaseLog, Op, Seen};

/// What a recovered case says about its log.
#[derive(Debug, Default)]
pub struct Verdict {
    pub acked: u64,
    pub lost: u64,
    /// It shows its unanswered last step too.
    pub beyond: bool,
    pub losses: Vec<String>,
    pub surprises: Vec<String>,
}

/// Compares a recovered case (`None`: not found) with its log.
pub fn judge(log: &CaseLog, seen: Option<&Seen>) -> Verdict {
    let mut v = Verdict {
        acked: log.acked().count() as u64,
        ..Verdict::default()
    };
    let Some(seen) = seen else {
        v.lost = v.acked;
        v.losses.push(format!(
            "{} is gone (404 after the restart): its {} acknowledged changes are lost",
            log.name(),
            v.acked
        ));
        return v;
    };
    let (a, b) = log.states();
    if seen.shows(&a) {
        return v;
    }
    if b.as_ref().is_some_and(|b| seen.shows(b)) {
        v.beyond = true;
        return v;
    }
    let alt = b.clone().unwrap_or_else(|| a.clone());
    // Status: the close, or the seat.
    if seen.status != a.status() && seen.status != alt.status() {
        if a.closed {
            v.lost += 1;
            v.losses.push(format!(
                "{}: its acknowledged close is lost: it shows status {}",
                log.name(),
                seen.status
            ));
        } else if a.seated && seen.status == "new" {
            v.lost += 1;
            v.losses.push(format!(
                "{}: its acknowledged seat (request_help / join) is lost: it shows status new",
                log.name()
            ));
        } else {
            v.surprises.push(format!(
                "{}: status {}, expected {}",
                log.name(),
                seen.status,
                a.status()
            ));
        }
    }
    // Assignee: the last acknowledged change that set it.
    if seen.assignee != a.assignee && seen.assignee != alt.assignee {
        let setter = log
            .acked()
            .filter(|op| match op {
                Op::Create { assignee, .. } => assignee.is_some(),
                Op::Assign { .. } | Op::Join => true,
                _ => false,
            })
            .last();
        match setter {
            Some(op) => {
                v.lost += 1;
                v.losses.push(format!(
                    "{}: its acknowledged {} is lost: the assignee is {:?}, expected {:?}",
                    log.name(),
                    op.describe(),
                    seen.assignee,
                    a.assignee
                ));
            }
            None => v.surprises.push(format!(
                "{}: assignee {:?}, none was asked for",
                log.name(),
                seen.assignee
            )),
        }
    }
    // Transcript: every acknowledged line, in order.
    if seen.lines != a.lines && seen.lines != alt.lines {
        let missing: Vec<&(String, String)> =
            a.lines.iter().filter(|l| !seen.lines.contains(l)).collect();
        if !missing.is_empty() {
            v.lost += missing.len() as u64;
            v.losses.push(format!(
                "{}: {} acknowledged chat lines missing from the transcript (first: {} {:?}); the transcript has {} lines",
                log.name(),
                missing.len(),
                missing[0].0,
                missing[0].1,
                seen.lines.len()
            ));
        }
        let extra = seen.lines.iter().filter(|l| !alt.lines.contains(l)).count();
        if extra > 0 || missing.is_empty() {
            v.surprises.push(format!(
                "{}: transcript {:?}, expected {:?}",
                log.name(),
                seen.lines,
                a.lines
            ));
        }
    }
    if v.lost == 0 && v.surprises.is_empty() {
        v.surprises.push(format!(
            "{}: shows part of its unanswered last step: {seen:?}, expected {a:?} or {b:?}",
            log.name()
        ));
    }
    v.lost = v.lost.min(v.acked);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crash::Step;

    fn log(steps: Vec<(Op, bool)>) -> CaseLog {
        CaseLog {
            round: 1,
            client: 0,
            agent: "admin".into(),
            group: Some("support".into()),
            code: Some("s12-345-678".into()),
            steps: steps
                .into_iter()
                .map(|(op, acked)| Step { op, acked })
                .collect(),
        }
    }

    fn seen(status: &str, assignee: Option<&str>, lines: &[(&str, &str)]) -> Seen {
        Seen {
            status: status.into(),
            assignee: assignee.map(str::to_string),
            lines: lines
                .iter()
                .map(|(r, t)| (r.to_string(), t.to_string()))
                .collect(),
        }
    }

    fn chat(role: &'static str, text: &str) -> Op {
        Op::Chat {
            role,
            text: text.into(),
        }
    }

    #[test]
    fn a_case_showing_its_answered_steps_or_one_more_is_recovered() {
        let l = log(vec![
            (Op::Help, true),
            (Op::Join, true),
            (chat("agent", "a"), true),
            (chat("customer", "b"), false),
        ]);
        let v = judge(&l, Some(&seen("pending", Some("admin"), &[("agent", "a")])));
        assert_eq!((v.acked, v.lost, v.beyond), (3, 0, false), "{v:?}");
        let both = [("agent", "a"), ("customer", "b")];
        let v = judge(&l, Some(&seen("pending", Some("admin"), &both)));
        assert_eq!((v.lost, v.beyond), (0, true), "{v:?}");
        assert!(v.surprises.is_empty(), "{v:?}");
    }

    #[test]
    fn missing_changes_are_counted_as_lost() {
        let l = log(vec![
            (
                Op::Create {
                    http: true,
                    assignee: None,
                },
                true,
            ),
            (
                Op::Assign {
                    to: "agent-1".into(),
                    http: false,
                },
                true,
            ),
            (Op::Close { http: true }, true),
        ]);
        let v = judge(&l, None);
        assert_eq!((v.acked, v.lost), (3, 3), "{v:?}");
        let v = judge(&l, Some(&seen("new", None, &[])));
        assert_eq!(v.lost, 2, "{v:?}");
        assert_eq!(v.losses.len(), 2, "{v:?}");
        assert!(v.losses[0].contains("close"), "{v:?}");
        assert!(v.losses[1].contains("assign to agent-1"), "{v:?}");
        let v = judge(&l, Some(&seen("closed", Some("agent-1"), &[])));
        assert_eq!(v.lost, 0, "{v:?}");

        let s = log(vec![
            (Op::Help, true),
            (Op::Join, true),
            (chat("agent", "a"), true),
            (chat("customer", "b"), true),
        ]);
        let v = judge(&s, Some(&seen("pending", Some("admin"), &[("agent", "a")])));
        assert_eq!(v.lost, 1, "{v:?}");
        assert!(v.losses[0].contains("\"b\""), "{v:?}");
    }

    #[test]
    fn states_nobody_asked_for_are_surprises() {
        let l = log(vec![(
            Op::Create {
                http: false,
                assignee: None,
            },
            true,
        )]);
        let v = judge(&l, Some(&seen("closed", None, &[])));
        assert_eq!(v.lost, 0, "{v:?}");
        assert_eq!(v.surprises.len(), 1, "{v:?}");
    }
}
