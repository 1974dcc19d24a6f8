//! An experiment: a control arm (the champion) and a challenger sharing an
//! endpoint's live traffic until feedback decides between them. Its input
//! rules, how a query is assigned an arm, and its proto form.
//!
//! The arms are resolved to fixed versions when the experiment starts, so
//! an alias moved during the experiment does not change what is compared.

use keel_proto::v1 as pb;
use keel_types::{validate, FieldError, ModelRef, Selector};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use xxhash_rust::xxh3::xxh3_64;

pub const MAX_EXPERIMENT_NAME_BYTES: usize = 256;
pub const MAX_REASON_BYTES: usize = 1024;
pub const DEFAULT_CHALLENGER_PERCENT: u32 = 50;
pub const DEFAULT_FLOOR: f64 = 0.05;
pub const DEFAULT_ALPHA: f64 = 0.05;
pub const DEFAULT_MIN_RATINGS_PER_ARM: u64 = 100;
pub const MAX_MIN_RATINGS_PER_ARM: u64 = 1_000_000;
pub const DEFAULT_GUARD_MIN_REQUESTS: u64 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Allocation {
    Fixed,
    Thompson,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StickyBy {
    User,
    Session,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExperimentState {
    Running,
    Stopped,
    Concluded,
    GuardBreached,
}

impl ExperimentState {
    /// Its name in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ExperimentState::Running => "running",
            ExperimentState::Stopped => "stopped",
            ExperimentState::Concluded => "concluded",
            ExperimentState::GuardBreached => "guard_breached",
        }
    }

    pub fn parse(text: &str) -> Option<ExperimentState> {
        [
            ExperimentState::Running,
            ExperimentState::Stopped,
            ExperimentState::Concluded,
            ExperimentState::GuardBreached,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }
}

/// Limits on the challenger; `None`: no limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Guards {
    pub max_error_rate: Option<f64>,
    pub max_p95_latency_ms: Option<f64>,
    pub max_thumbs_down_rate: Option<f64>,
    /// Requests (ratings, for the thumbs-down rate) the challenger needs
    /// before a guard is checked: a few early errors are not a trend.
    pub min_requests: u64,
}

/// One arm as it was given and what it resolved to at the start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arm {
    /// `model@alias` or `model/version`, as given.
    pub target: String,
    pub model: String,
    pub version: u32,
}

impl Arm {
    /// The fixed chain this arm serves.
    pub fn pinned(&self) -> ModelRef {
        ModelRef {
            model: self.model.clone(),
            selector: Selector::Version(self.version),
        }
    }

    /// The alias the arm was given as, if it was one.
    pub fn alias(&self) -> Option<String> {
        match ModelRef::parse("target", &self.target).ok()?.selector {
            Selector::Alias(alias) => Some(alias),
            Selector::Version(_) => None,
        }
    }
}

/// What an experiment was started with; it never changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentSpec {
    pub control: Arm,
    pub challenger: Arm,
    #[serde(flatten)]
    pub settings: Settings,
}

/// How an experiment splits traffic, guards and decides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub allocation: Allocation,
    /// Fixed allocation: the challenger's share in percent.
    pub challenger_percent: u32,
    /// Thompson allocation: the least share of each arm.
    pub floor: f64,
    pub sticky_by: StickyBy,
    pub guards: Guards,
    pub alpha: f64,
    pub min_ratings_per_arm: u64,
    pub promote_on_win: bool,
}

impl Settings {
    /// The challenger's share before any feedback.
    pub fn initial_challenger_share(&self) -> f64 {
        match self.allocation {
            Allocation::Fixed => f64::from(self.challenger_percent) / 100.0,
            Allocation::Thompson => 0.5,
        }
    }
}

/// One arm's traffic and feedback since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmFigures {
    pub requests: u64,
    pub errors: u64,
    pub latency_p95_ms: f64,
    pub liked: u64,
    pub disliked: u64,
}

impl ArmFigures {
    pub fn error_rate(&self) -> f64 {
        ratio(self.errors, self.requests)
    }

    pub fn ratings(&self) -> u64 {
        self.liked + self.disliked
    }

    pub fn like_rate(&self) -> f64 {
        ratio(self.liked, self.ratings())
    }

    pub fn thumbs_down_rate(&self) -> f64 {
        ratio(self.disliked, self.ratings())
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    NotEnoughData,
    NoDifferenceYet,
    ChallengerWins,
    ControlWins,
}

/// The latest figures and what they say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    pub control: ArmFigures,
    pub challenger: ArmFigures,
    pub challenger_share: f64,
    pub verdict_kind: VerdictKind,
    pub verdict: String,
    pub difference: f64,
    pub p_value: f64,
    pub more_ratings_needed: u64,
}

impl Assessment {
    /// Before any figures: the start's share, and no verdict.
    pub fn initial(spec: &ExperimentSpec) -> Assessment {
        Assessment {
            control: ArmFigures::default(),
            challenger: ArmFigures::default(),
            challenger_share: spec.settings.initial_challenger_share(),
            verdict_kind: VerdictKind::NotEnoughData,
            verdict: format!(
                "not enough data: each arm needs {} ratings",
                spec.settings.min_ratings_per_arm
            ),
            difference: 0.0,
            p_value: 1.0,
            more_ratings_needed: spec.settings.min_ratings_per_arm,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    pub id: Uuid,
    pub endpoint: String,
    pub name: String,
    pub spec: ExperimentSpec,
    pub state: ExperimentState,
    pub assessment: Assessment,
    pub stop_reason: String,
    pub actor: String,
    pub started_at_ms: i64,
    pub stopped_at_ms: i64,
    pub refreshed_at_ms: i64,
}

/// Which arm answers a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Control,
    Challenger,
}

/// The arm for a query by `user_id` in `session_id`: the sticky key's hash
/// is a stable number in [0, 1), and the challenger takes the numbers
/// below its share, so when the share grows only callers move towards the
/// challenger, and back when it shrinks. Without the key, at random.
pub fn assign(
    experiment_id: Uuid,
    sticky_by: StickyBy,
    challenger_share: f64,
    user_id: &str,
    session_id: &str,
) -> Side {
    let key = match sticky_by {
        StickyBy::User => user_id,
        StickyBy::Session => session_id,
    };
    let point = if key.is_empty() {
        rand::random::<f64>()
    } else {
        let mut bytes = Vec::with_capacity(16 + 1 + key.len());
        bytes.extend_from_slice(experiment_id.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(key.as_bytes());
        // The top 53 bits, as a double in [0, 1).
        (xxh3_64(&bytes) >> 11) as f64 / (1u64 << 53) as f64
    };
    if point < challenger_share {
        Side::Challenger
    } else {
        Side::Control
    }
}

/// A start request as the caller sent it; numbers at 0 take their default.
#[derive(Debug, Clone, Default)]
pub struct StartInput {
    pub endpoint: String,
    pub name: String,
    pub control: String,
    pub challenger: String,
    pub allocation: Option<Allocation>,
    pub challenger_percent: u32,
    pub floor: f64,
    pub sticky_by: Option<StickyBy>,
    pub max_error_rate: f64,
    pub max_p95_latency_ms: f64,
    pub max_thumbs_down_rate: f64,
    pub guard_min_requests: u64,
    pub alpha: f64,
    pub min_ratings_per_arm: u64,
    pub promote_on_win: bool,
    pub actor: String,
}

/// A start request that passed every input rule; the arms are not
/// resolved yet.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidStart {
    pub endpoint: String,
    pub name: String,
    pub control: ModelRef,
    pub challenger: ModelRef,
    pub settings: Settings,
    pub actor: String,
}

pub fn validate_start(input: &StartInput) -> Result<ValidStart, FieldError> {
    validate::name("endpoint", &input.endpoint)?;
    validate::max_len("name", &input.name, MAX_EXPERIMENT_NAME_BYTES)?;
    validate::max_len("actor", &input.actor, validate::MAX_ID_BYTES)?;
    let control = ModelRef::parse("control", &input.control)?;
    let challenger = ModelRef::parse("challenger", &input.challenger)?;
    if control == challenger {
        return Err(FieldError::new(
            "challenger",
            format!("must differ from control ({control})"),
        ));
    }
    let allocation = input.allocation.unwrap_or(Allocation::Fixed);
    let challenger_percent = match input.challenger_percent {
        0 => DEFAULT_CHALLENGER_PERCENT,
        percent => percent,
    };
    validate::in_range("challenger_percent", u64::from(challenger_percent), 1, 99)?;
    let floor = if input.floor == 0.0 {
        DEFAULT_FLOOR
    } else {
        input.floor
    };
    fraction_within("floor", floor, 0.0, 0.5)?;
    let alpha = if input.alpha == 0.0 {
        DEFAULT_ALPHA
    } else {
        input.alpha
    };
    if !(alpha > 0.0 && alpha < 0.5) {
        return Err(FieldError::new(
            "alpha",
            format!("must be above 0 and below 0.5, got {alpha}"),
        ));
    }
    let min_ratings_per_arm = match input.min_ratings_per_arm {
        0 => DEFAULT_MIN_RATINGS_PER_ARM,
        count => count,
    };
    validate::in_range(
        "min_ratings_per_arm",
        min_ratings_per_arm,
        1,
        MAX_MIN_RATINGS_PER_ARM,
    )?;
    let guards = Guards {
        max_error_rate: optional_limit("guards.max_error_rate", input.max_error_rate, Some(1.0))?,
        max_p95_latency_ms: optional_limit(
            "guards.max_p95_latency_ms",
            input.max_p95_latency_ms,
            None,
        )?,
        max_thumbs_down_rate: optional_limit(
            "guards.max_thumbs_down_rate",
            input.max_thumbs_down_rate,
            Some(1.0),
        )?,
        min_requests: match input.guard_min_requests {
            0 => DEFAULT_GUARD_MIN_REQUESTS,
            count => count,
        },
    };
    if input.promote_on_win {
        match &control.selector {
            Selector::Alias(_) if control.model == challenger.model => {}
            _ => {
                return Err(FieldError::new(
                    "promote_on_win",
                    format!(
                        "needs the control to be an alias of the challenger's model \
                         (`{}@ALIAS`), got `{control}`",
                        challenger.model
                    ),
                ))
            }
        }
    }
    Ok(ValidStart {
        endpoint: input.endpoint.clone(),
        name: input.name.clone(),
        control,
        challenger,
        settings: Settings {
            allocation,
            challenger_percent,
            floor,
            sticky_by: input.sticky_by.unwrap_or(StickyBy::User),
            guards,
            alpha,
            min_ratings_per_arm,
            promote_on_win: input.promote_on_win,
        },
        actor: if input.actor.is_empty() {
            "anonymous".to_string()
        } else {
            input.actor.clone()
        },
    })
}

fn fraction_within(field: &str, value: f64, low: f64, high: f64) -> Result<(), FieldError> {
    if value.is_finite() && (low..=high).contains(&value) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("must be within {low}..={high}, got {value}"),
        ))
    }
}

/// 0: no limit; else a positive finite number, at most `max` when given.
fn optional_limit(field: &str, value: f64, max: Option<f64>) -> Result<Option<f64>, FieldError> {
    if value == 0.0 {
        return Ok(None);
    }
    let within_max = max.is_none_or(|max| value <= max);
    if value.is_finite() && value > 0.0 && within_max {
        return Ok(Some(value));
    }
    let rule = match max {
        Some(max) => format!("must be above 0 and at most {max} (0: no limit), got {value}"),
        None => format!("must be a positive number (0: no limit), got {value}"),
    };
    Err(FieldError::new(field, rule))
}

/// A stop reason as the caller sent it.
pub fn validate_reason(reason: &str) -> Result<(), FieldError> {
    validate::not_empty("reason", reason)?;
    validate::max_len("reason", reason, MAX_REASON_BYTES)
}

pub fn parse_id(field: &str, text: &str) -> Result<Uuid, FieldError> {
    Uuid::parse_str(text)
        .map_err(|_| FieldError::new(field, format!("must be a UUID, got `{text}`")))
}

impl StartInput {
    pub fn from_proto(request: pb::StartExperimentRequest) -> StartInput {
        let guards = request.guards.unwrap_or_default();
        StartInput {
            endpoint: request.endpoint,
            name: request.name,
            control: request.control,
            challenger: request.challenger,
            allocation: match pb::Allocation::try_from(request.allocation) {
                Ok(pb::Allocation::Thompson) => Some(Allocation::Thompson),
                Ok(pb::Allocation::Fixed) => Some(Allocation::Fixed),
                _ => None,
            },
            challenger_percent: request.challenger_percent,
            floor: request.floor,
            sticky_by: match pb::StickyBy::try_from(request.sticky_by) {
                Ok(pb::StickyBy::Session) => Some(StickyBy::Session),
                Ok(pb::StickyBy::User) => Some(StickyBy::User),
                _ => None,
            },
            max_error_rate: guards.max_error_rate,
            max_p95_latency_ms: guards.max_p95_latency_ms,
            max_thumbs_down_rate: guards.max_thumbs_down_rate,
            guard_min_requests: guards.min_requests,
            alpha: request.alpha,
            min_ratings_per_arm: request.min_ratings_per_arm,
            promote_on_win: request.promote_on_win,
            actor: request.actor,
        }
    }
}

fn arm_to_proto(arm: &Arm, figures: &ArmFigures, share: f64) -> pb::ExperimentArm {
    let interval = keel_eval::stats::proportion_interval(figures.liked, figures.ratings());
    pb::ExperimentArm {
        target: arm.target.clone(),
        model: arm.model.clone(),
        version: arm.version,
        share,
        requests: figures.requests,
        errors: figures.errors,
        error_rate: figures.error_rate(),
        latency_p95_ms: figures.latency_p95_ms,
        liked: figures.liked,
        disliked: figures.disliked,
        like_rate: figures.like_rate(),
        like_rate_low: interval.map_or(0.0, |interval| interval.low),
        like_rate_high: interval.map_or(1.0, |interval| interval.high),
    }
}

impl From<Experiment> for pb::Experiment {
    fn from(experiment: Experiment) -> pb::Experiment {
        let spec = &experiment.spec;
        let settings = &spec.settings;
        let assessment = &experiment.assessment;
        let share = assessment.challenger_share;
        pb::Experiment {
            id: experiment.id.to_string(),
            endpoint: experiment.endpoint,
            name: experiment.name,
            control: Some(arm_to_proto(
                &spec.control,
                &assessment.control,
                1.0 - share,
            )),
            challenger: Some(arm_to_proto(
                &spec.challenger,
                &assessment.challenger,
                share,
            )),
            allocation: match settings.allocation {
                Allocation::Fixed => pb::Allocation::Fixed,
                Allocation::Thompson => pb::Allocation::Thompson,
            } as i32,
            challenger_percent: settings.challenger_percent,
            floor: settings.floor,
            sticky_by: match settings.sticky_by {
                StickyBy::User => pb::StickyBy::User,
                StickyBy::Session => pb::StickyBy::Session,
            } as i32,
            guards: Some(pb::ExperimentGuards {
                max_error_rate: settings.guards.max_error_rate.unwrap_or(0.0),
                max_p95_latency_ms: settings.guards.max_p95_latency_ms.unwrap_or(0.0),
                max_thumbs_down_rate: settings.guards.max_thumbs_down_rate.unwrap_or(0.0),
                min_requests: settings.guards.min_requests,
            }),
            alpha: settings.alpha,
            min_ratings_per_arm: settings.min_ratings_per_arm,
            promote_on_win: settings.promote_on_win,
            state: match experiment.state {
                ExperimentState::Running => pb::ExperimentState::Running,
                ExperimentState::Stopped => pb::ExperimentState::Stopped,
                ExperimentState::Concluded => pb::ExperimentState::Concluded,
                ExperimentState::GuardBreached => pb::ExperimentState::GuardBreached,
            } as i32,
            verdict_kind: match assessment.verdict_kind {
                VerdictKind::NotEnoughData => pb::VerdictKind::NotEnoughData,
                VerdictKind::NoDifferenceYet => pb::VerdictKind::NoDifferenceYet,
                VerdictKind::ChallengerWins => pb::VerdictKind::ChallengerWins,
                VerdictKind::ControlWins => pb::VerdictKind::ControlWins,
            } as i32,
            verdict: assessment.verdict.clone(),
            difference: assessment.difference,
            p_value: assessment.p_value,
            more_ratings_needed: assessment.more_ratings_needed,
            stop_reason: experiment.stop_reason,
            actor: experiment.actor,
            started_at_ms: experiment.started_at_ms,
            stopped_at_ms: experiment.stopped_at_ms,
            refreshed_at_ms: experiment.refreshed_at_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> StartInput {
        StartInput {
            endpoint: "support".to_string(),
            control: "bot@champion".to_string(),
            challenger: "bot@challenger".to_string(),
            ..StartInput::default()
        }
    }

    #[test]
    fn zeros_take_the_defaults() {
        let valid = validate_start(&start()).unwrap();
        assert_eq!(valid.settings.allocation, Allocation::Fixed);
        assert_eq!(valid.settings.challenger_percent, 50);
        assert_eq!(valid.settings.floor, 0.05);
        assert_eq!(valid.settings.alpha, 0.05);
        assert_eq!(valid.settings.min_ratings_per_arm, 100);
        assert_eq!(valid.settings.sticky_by, StickyBy::User);
        assert_eq!(valid.settings.guards.max_error_rate, None);
        assert_eq!(valid.settings.guards.min_requests, 20);
        assert_eq!(valid.actor, "anonymous");
    }

    #[test]
    fn each_rule_names_its_field() {
        type Edit = fn(&mut StartInput);
        let cases: [(Edit, &str); 10] = [
            (|input| input.endpoint = String::new(), "endpoint"),
            (|input| input.control = "bot".to_string(), "control"),
            (
                |input| input.challenger = "bot@champion".to_string(),
                "challenger",
            ),
            (|input| input.challenger_percent = 100, "challenger_percent"),
            (|input| input.floor = 0.6, "floor"),
            (|input| input.alpha = 0.5, "alpha"),
            (|input| input.max_error_rate = 1.5, "guards.max_error_rate"),
            (
                |input| input.max_p95_latency_ms = -3.0,
                "guards.max_p95_latency_ms",
            ),
            (|input| input.name = "n".repeat(257), "name"),
            (
                |input| {
                    input.promote_on_win = true;
                    input.control = "bot/1".to_string();
                },
                "promote_on_win",
            ),
        ];
        for (edit, field) in cases {
            let mut input = start();
            edit(&mut input);
            let error = validate_start(&input).unwrap_err();
            assert_eq!(error.field, field, "{error}");
        }
        let mut other_model = start();
        other_model.promote_on_win = true;
        other_model.challenger = "other@challenger".to_string();
        assert_eq!(
            validate_start(&other_model).unwrap_err().field,
            "promote_on_win"
        );
    }

    #[test]
    fn a_sticky_caller_keeps_its_arm_and_the_split_follows_the_share() {
        let id = Uuid::new_v4();
        let mut challenger = 0;
        for index in 0..2000 {
            let user = format!("user-{index}");
            let side = assign(id, StickyBy::User, 0.3, &user, "");
            for _ in 0..3 {
                assert_eq!(assign(id, StickyBy::User, 0.3, &user, "other"), side);
            }
            challenger += usize::from(side == Side::Challenger);
        }
        // 30% of 2000 users, within about four standard deviations.
        assert!((520..=680).contains(&challenger), "{challenger}");
    }

    #[test]
    fn a_growing_share_only_moves_callers_to_the_challenger() {
        let id = Uuid::new_v4();
        for index in 0..500 {
            let session = format!("session-{index}");
            let before = assign(id, StickyBy::Session, 0.2, "", &session);
            let after = assign(id, StickyBy::Session, 0.6, "", &session);
            if before == Side::Challenger {
                assert_eq!(after, Side::Challenger, "{session}");
            }
        }
        assert_eq!(assign(id, StickyBy::User, 0.0, "u", ""), Side::Control);
        assert_eq!(assign(id, StickyBy::User, 1.0, "u", ""), Side::Challenger);
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for state in [
            ExperimentState::Running,
            ExperimentState::Stopped,
            ExperimentState::Concluded,
            ExperimentState::GuardBreached,
        ] {
            assert_eq!(ExperimentState::parse(state.as_str()), Some(state));
        }
        assert_eq!(ExperimentState::parse("paused"), None);
    }
}
