//! The decision plan: what each syscall number does, with the precedence a stack of
//! filters would give (see the module doc, "One filter"), before it becomes BPF.

use super::model::{Action, Cond};
use super::resolve::{self, ResolvedRule, Target};
use super::rules::own_rules;
use super::{CompileOptions, Parsed};

/// The profile's rules plus upm's network rules, each ranked as the module doc says.
pub(super) fn ranked(
    profile: &Parsed,
    opts: &CompileOptions,
    target: &Target,
) -> Vec<(Rank, ResolvedRule)> {
    let mut groups: Vec<Action> = Vec::new();
    let mut ranked = Vec::new();
    for rule in resolve::rules(profile, target) {
        let group = if rule.action == Action::Allow {
            0
        } else if let Some(i) = groups.iter().position(|a| *a == rule.action) {
            i
        } else {
            groups.push(rule.action);
            groups.len() - 1
        };
        ranked.push((Rank::new(rule.action, group), rule));
    }
    // Ranked after every profile group, so their errnos win over the profile's.
    let first = groups.len();
    for (i, rule) in own_rules(opts).into_iter().enumerate() {
        ranked.push((Rank::new(rule.action, first + i), rule));
    }
    ranked
}

/// [`ranked`], by syscall number, then best rank first; stable, so one rank keeps the
/// profile's order.
pub(super) fn ranked_by_number(
    profile: &Parsed,
    opts: &CompileOptions,
    target: &Target,
) -> Vec<(Rank, ResolvedRule)> {
    let mut rules = ranked(profile, opts, target);
    rules.sort_by_key(|(rank, r)| (r.nr, std::cmp::Reverse(*rank)));
    rules
}

/// Which of several matching rules decides: the most restrictive action, and between
/// equally restrictive ones the later group (the filter a stack would install later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Rank {
    restrictiveness: u8,
    group: usize,
}

impl Rank {
    pub(super) fn new(action: Action, group: usize) -> Rank {
        let restrictiveness = match action {
            Action::Allow => 0,
            Action::Log => 1,
            Action::Errno(_) => 2,
            Action::Trap => 3,
            Action::KillThread => 4,
            Action::KillProcess => 5,
        };
        Rank {
            restrictiveness,
            group,
        }
    }
}

/// One syscall number's decision: the first check that holds returns its action, and
/// `otherwise` is returned when none does. A block without checks is a single RET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Block {
    pub(super) checks: Vec<Check>,
    pub(super) otherwise: Action,
}

/// Conditions that must all hold (never empty: an unconditional rule ends a block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Check {
    pub(super) action: Action,
    pub(super) conds: Vec<Cond>,
}

impl Block {
    pub(super) fn ret(action: Action) -> Block {
        Block {
            checks: Vec::new(),
            otherwise: action,
        }
    }

    /// One syscall's rules, best rank first; a call matching none gets `default`.
    pub(super) fn decide(rules: &[(Rank, ResolvedRule)], default: Action) -> Block {
        let mut checks: Vec<Check> = Vec::new();
        let mut otherwise = default;
        for (_, rule) in rules {
            if rule.conds.is_empty() {
                // Everything ranked below an unconditional rule is unreachable.
                otherwise = rule.action;
                break;
            }
            let check = Check {
                action: rule.action,
                conds: rule.conds.clone(),
            };
            if !checks.contains(&check) {
                checks.push(check);
            }
        }
        // A last check whose action is also the fallback decides nothing.
        while checks.last().is_some_and(|c| c.action == otherwise) {
            checks.pop();
        }
        Block { checks, otherwise }
    }
}

/// The whole filter before it becomes BPF.
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// Distinct blocks; syscall numbers with equal decisions share one.
    pub(super) blocks: Vec<Block>,
    /// (first syscall number, block), sorted and starting at 0; a range runs up to the
    /// next one's start, the last one up to u32::MAX. Neighbours have different blocks.
    pub(super) ranges: Vec<(u32, usize)>,
}

impl Plan {
    /// The decision for every syscall number.
    pub(super) fn new(profile: &Parsed, opts: &CompileOptions, target: &Target) -> Plan {
        let rules = ranked_by_number(profile, opts, target);
        let mut plan = Plan::default();
        let gap = plan.intern(Block::ret(profile.default_action));
        let mut next: u64 = 0;
        for same_nr in rules.chunk_by(|a, b| a.1.nr == b.1.nr) {
            // Native numbers are small and positive (tested); anything else is no syscall.
            let Some(nr) = same_nr.first().and_then(|(_, r)| u32::try_from(r.nr).ok()) else {
                continue;
            };
            let nr = u64::from(nr);
            if nr > next {
                plan.push_range(next, gap);
            }
            let block = plan.intern(Block::decide(same_nr, profile.default_action));
            plan.push_range(nr, block);
            next = nr + 1;
        }
        if next <= u64::from(u32::MAX) {
            plan.push_range(next, gap);
        }
        plan
    }

    fn intern(&mut self, block: Block) -> usize {
        match self.blocks.iter().position(|b| *b == block) {
            Some(i) => i,
            None => {
                self.blocks.push(block);
                self.blocks.len() - 1
            }
        }
    }

    /// `start` is at most u32::MAX: callers only pass numbers that follow a u32.
    fn push_range(&mut self, start: u64, block: usize) {
        if self.ranges.last().is_some_and(|r| r.1 == block) {
            return;
        }
        if let Ok(start) = u32::try_from(start) {
            self.ranges.push((start, block));
        }
    }
}
