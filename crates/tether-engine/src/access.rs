//! Who may read and write what: identities and the access policy.
//!
//! The transport authenticates a connection (a JWT, see the `tether` crate's `auth`
//! module) and hands the engine an [`Identity`]; the engine asks [`Access`] about every
//! read, write, subscription, publish and presence join. Decisions live here, next to
//! the subscription state, because a read rule may depend on a record's data
//! (`data.owner == token.sub`): whether a change may be pushed is only known when the
//! change is offered to a subscription, under its outbox lock.
//!
//! Two modes. [`Access::open`] (no auth configured) allows everything, so a server with
//! no set-up behaves as if this module did not exist. [`Access::with_rules`] denies
//! everything no rule allows: a resource, topic or room without a rule is closed.
//!
//! Rules are small expressions over the record (`data.*`, `id`, `resource`), the
//! token's claims (`token.*`) and the room or topic name (`room`, `topic`):
//!
//! ```text
//! data.owner == token.sub || token.role == "admin"
//! token.sub in data.members && !data.archived
//! ```
//!
//! `==`, `!=` and `in` (array membership) compare JSON values; `&&`, `||`, `!` and
//! parentheses combine them; a bare value is true only if it is JSON `true`. A missing
//! field and JSON `null` both count as absent, and any comparison with an absent side
//! is false, except with the literal `null` (`data.owner == null`). So an anonymous
//! caller (no `token.sub`) never matches `data.owner == token.sub`, even on a record
//! with no owner.

use std::sync::Arc;
use tether_core::{Data, Error, ErrorCode, Query, RecordId, ResourceName, Result};

use serde_json::Value;

/// Who is asking: the verified claims of a token, or nobody (anonymous).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    /// The token's `sub` claim, if any.
    pub subject: Option<Arc<str>>,
    /// Every claim of the token (`token.*` in rules). Empty for anonymous callers.
    pub claims: Data,
    /// When the token expires (seconds since the Unix epoch): a connection is closed
    /// then, so a revoked user does not keep a socket open forever.
    pub expires_at: Option<u64>,
}

impl Identity {
    /// Nobody: no token was given.
    pub fn anonymous() -> Identity {
        Identity::default()
    }

    /// The one anonymous identity every anonymous connection shares, so an open
    /// server's idle connections do not each hold a copy of nobody.
    pub fn shared_anonymous() -> Arc<Identity> {
        static ANONYMOUS: std::sync::LazyLock<Arc<Identity>> =
            std::sync::LazyLock::new(|| Arc::new(Identity::anonymous()));
        ANONYMOUS.clone()
    }

    /// An identity from verified claims.
    pub fn from_claims(claims: Data) -> Identity {
        let subject = claims.get("sub").and_then(|s| match s {
            Value::String(s) => Some(Arc::from(s.as_str())),
            Value::Number(n) => Some(Arc::from(n.to_string())),
            _ => None,
        });
        let expires_at = claims.get("exp").and_then(Value::as_u64);
        Identity {
            subject,
            claims,
            expires_at,
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.subject.is_none() && self.claims.is_empty()
    }

    /// A short name for logs and error messages.
    pub fn describe(&self) -> String {
        match &self.subject {
            Some(s) => format!("{s:?}"),
            None if self.claims.is_empty() => "an anonymous caller".into(),
            None => "a token without a subject".into(),
        }
    }
}

/// The access policy. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Access {
    rules: Option<Arc<Rules>>,
}

#[derive(Debug, Default)]
struct Rules {
    resources: Vec<(Pattern, ResourceRules)>,
    topics: Vec<(Pattern, TopicRules)>,
    rooms: Option<Rule>,
}

#[derive(Debug, Clone, Default)]
struct ResourceRules {
    read: Option<Rule>,
    write: Option<Rule>,
}

#[derive(Debug, Clone, Default)]
struct TopicRules {
    subscribe: Option<Rule>,
    publish: Option<Rule>,
}

/// Rules as the configuration states them, before they are checked and parsed.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    /// (resource pattern, read rule, write rule); a missing rule denies.
    pub resources: Vec<(String, Option<String>, Option<String>)>,
    /// (topic pattern, subscribe rule, publish rule).
    pub topics: Vec<(String, Option<String>, Option<String>)>,
    /// Who may join a room that is not a record's room (`<resource>/<id>`, which needs
    /// read access to that record instead).
    pub rooms: Option<String>,
}

impl Access {
    /// No auth configured: everything is allowed.
    pub fn open() -> Access {
        Access { rules: None }
    }

    /// Deny by default; allow what `set` allows. Fails on a rule that does not parse
    /// or a pattern that is not a name, a `prefix*` or `*`.
    pub fn with_rules(set: RuleSet) -> std::result::Result<Access, String> {
        let parse = |what: &str, pattern: &str, rule: &Option<String>| {
            rule.as_deref()
                .map(|r| Rule::parse(r).map_err(|e| format!("{what} {pattern:?}: {e}")))
                .transpose()
        };
        let mut rules = Rules::default();
        for (pattern, read, write) in &set.resources {
            let p = Pattern::parse(pattern).map_err(|e| format!("resource {e}"))?;
            let read = parse("read rule of resource", pattern, read)?;
            let write = parse("write rule of resource", pattern, write)?;
            rules.resources.push((p, ResourceRules { read, write }));
        }
        for (pattern, subscribe, publish) in &set.topics {
            let p = Pattern::parse(pattern).map_err(|e| format!("topic {e}"))?;
            let subscribe = parse("subscribe rule of topic", pattern, subscribe)?;
            let publish = parse("publish rule of topic", pattern, publish)?;
            rules.topics.push((p, TopicRules { subscribe, publish }));
        }
        rules.rooms = parse("join rule of rooms", "", &set.rooms)?;
        Ok(Access {
            rules: Some(Arc::new(rules)),
        })
    }

    /// Whether no rules apply at all (no auth configured).
    pub fn is_open(&self) -> bool {
        self.rules.is_none()
    }

    /// Whether who may read `resource` could differ between the two policies. A
    /// reload uses it to find the subscriptions whose pushes were filtered by a rule
    /// that no longer holds.
    pub fn read_rule_differs(&self, other: &Access, resource: &str) -> bool {
        self.read_rule(resource) != other.read_rule(resource)
    }

    /// Whether who may subscribe to `topic` could differ between the two policies.
    pub fn subscribe_rule_differs(&self, other: &Access, topic: &str) -> bool {
        self.subscribe_rule(topic) != other.subscribe_rule(topic)
    }

    /// The read rule for `resource`: `None` when open, `Some(None)` when none applies.
    fn read_rule(&self, resource: &str) -> Option<Option<&Rule>> {
        let rules = self.rules.as_ref()?;
        Some(pick(&rules.resources, resource).and_then(|r| r.read.as_ref()))
    }

    /// The subscribe rule for `topic`, in the same form as [`Access::read_rule`].
    fn subscribe_rule(&self, topic: &str) -> Option<Option<&Rule>> {
        let rules = self.rules.as_ref()?;
        Some(pick(&rules.topics, topic).and_then(|t| t.subscribe.as_ref()))
    }

    fn resource_rules(&self, resource: &ResourceName) -> Option<&ResourceRules> {
        let rules = self.rules.as_ref()?;
        pick(&rules.resources, resource.as_str())
    }

    /// What `who` may read of `resource`, decided once per subscription or query.
    pub fn read_guard(&self, who: &Arc<Identity>, resource: &ResourceName) -> ReadGuard {
        if self.is_open() {
            return ReadGuard::All;
        }
        let Some(rule) = self.resource_rules(resource).and_then(|r| r.read.as_ref()) else {
            return ReadGuard::None;
        };
        if rule.uses_record() {
            ReadGuard::Check(Arc::new(ReadCheck {
                rule: rule.clone(),
                who: who.clone(),
                resource: resource.clone(),
            }))
        } else if rule.eval(&Ctx::resource(who, resource, None, None)) {
            ReadGuard::All
        } else {
            ReadGuard::None
        }
    }

    /// Whether `who` may read this record.
    pub fn may_read(
        &self,
        who: &Identity,
        resource: &ResourceName,
        id: &RecordId,
        data: &Data,
    ) -> bool {
        if self.is_open() {
            return true;
        }
        self.resource_rules(resource)
            .and_then(|r| r.read.as_ref())
            .is_some_and(|rule| rule.eval(&Ctx::resource(who, resource, Some(id), Some(data))))
    }

    /// Whether `who` may write this record as it is (`Some` body) or may create it
    /// (`None`: it does not exist; only rules that do not look at `data` can allow that,
    /// so a create is checked against the body it would create instead).
    pub fn may_write(
        &self,
        who: &Identity,
        resource: &ResourceName,
        id: &RecordId,
        data: Option<&Data>,
    ) -> bool {
        if self.is_open() {
            return true;
        }
        self.resource_rules(resource)
            .and_then(|r| r.write.as_ref())
            .is_some_and(|rule| rule.eval(&Ctx::resource(who, resource, Some(id), data)))
    }

    /// Whether `who` may subscribe to a topic.
    pub fn may_subscribe_topic(&self, who: &Identity, topic: &str) -> bool {
        self.topic_rule(who, topic, |t| t.subscribe.as_ref())
    }

    /// Whether `who` may publish to a topic.
    pub fn may_publish(&self, who: &Identity, topic: &str) -> bool {
        self.topic_rule(who, topic, |t| t.publish.as_ref())
    }

    fn topic_rule(
        &self,
        who: &Identity,
        topic: &str,
        which: impl Fn(&TopicRules) -> Option<&Rule>,
    ) -> bool {
        let Some(rules) = &self.rules else {
            return true;
        };
        pick(&rules.topics, topic)
            .and_then(which)
            .is_some_and(|rule| rule.eval(&Ctx::named(who, "topic", topic)))
    }

    /// Whether `who` may join a room that is not a record's room.
    pub fn may_join_room(&self, who: &Identity, room: &str) -> bool {
        let Some(rules) = &self.rules else {
            return true;
        };
        rules
            .rooms
            .as_ref()
            .is_some_and(|rule| rule.eval(&Ctx::named(who, "room", room)))
    }
}

/// Exact names win over prefixes, longer prefixes over shorter ones, `*` is last.
fn pick<'a, T>(rules: &'a [(Pattern, T)], name: &str) -> Option<&'a T> {
    rules
        .iter()
        .filter(|(p, _)| p.matches(name))
        .max_by_key(|(p, _)| p.specificity())
        .map(|(_, r)| r)
}

#[derive(Debug, Clone, PartialEq)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn parse(s: &str) -> std::result::Result<Pattern, String> {
        let valid = |s: &str| {
            s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.:/".contains(c))
        };
        match s.strip_suffix('*') {
            Some(prefix) if valid(prefix) => Ok(Pattern::Prefix(prefix.to_owned())),
            None if !s.is_empty() && valid(s) => Ok(Pattern::Exact(s.to_owned())),
            _ => Err(format!(
                "pattern {s:?}: expected a name, a prefix ending in '*', or '*'"
            )),
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(e) => e == name,
            Pattern::Prefix(p) => name.starts_with(p.as_str()),
        }
    }

    fn specificity(&self) -> usize {
        match self {
            Pattern::Exact(_) => usize::MAX,
            Pattern::Prefix(p) => p.len(),
        }
    }
}

/// What a subscription or query may see of a resource.
#[derive(Debug, Clone)]
pub enum ReadGuard {
    /// Every record (no auth, or a rule that does not look at the record and allows).
    All,
    /// No record: the rule denies this caller whatever the record holds.
    None,
    /// Each record is checked.
    Check(Arc<ReadCheck>),
}

/// A read rule bound to one caller and resource.
#[derive(Debug)]
pub struct ReadCheck {
    rule: Rule,
    who: Arc<Identity>,
    resource: ResourceName,
}

impl ReadGuard {
    /// Whether the record may be seen.
    pub fn allows(&self, id: &RecordId, data: &Data) -> bool {
        match self {
            ReadGuard::All => true,
            ReadGuard::None => false,
            ReadGuard::Check(c) => {
                c.rule
                    .eval(&Ctx::resource(&c.who, &c.resource, Some(id), Some(data)))
            }
        }
    }

    /// Whether some records may be hidden, so membership must be tracked.
    pub fn filters(&self) -> bool {
        !matches!(self, ReadGuard::All)
    }

    /// Narrows a query to what the caller may read, as far as the store's equality
    /// filters can say it: a rule `data.owner == token.sub && ...` means only this
    /// caller's records need to be read, instead of the first 10,000 of everyone's.
    /// `None` when nothing can be readable (a query would return no record). The
    /// narrowed query still goes through [`ReadGuard::allows`]: the narrowing is
    /// necessary, not sufficient.
    pub fn narrow(&self, query: &Query) -> Option<Query> {
        let ReadGuard::Check(c) = self else {
            return match self {
                ReadGuard::None => None,
                _ => Some(query.clone()),
            };
        };
        let ctx = Ctx::resource(&c.who, &c.resource, None, None);
        let mut narrowed = query.clone();
        for (field, want) in implied_equalities(&c.rule.0, &ctx)? {
            match narrowed.filter.get(&field) {
                Some(have) if *have != want => return None,
                _ => {
                    narrowed.filter.insert(field, want);
                }
            }
        }
        Some(narrowed)
    }
}

/// Top-level field equalities every record satisfying `e` has, resolved for the
/// caller: `Some([])` when `e` implies none, `None` when `e` can never hold for this
/// caller (`data.owner == token.sub` for a token without `sub`). Only conjunctions are
/// looked into: `a || b` implies nothing about either side.
fn implied_equalities(e: &Expr, ctx: &Ctx<'_>) -> Option<Vec<(String, Value)>> {
    match e {
        Expr::And(parts) => {
            let mut all: Vec<(String, Value)> = Vec::new();
            for part in parts {
                for (field, want) in implied_equalities(part, ctx)? {
                    match all.iter().find(|(f, _)| *f == field) {
                        Some((_, have)) if *have != want => return None,
                        Some(_) => {}
                        None => all.push((field, want)),
                    }
                }
            }
            Some(all)
        }
        Expr::Eq(a, b) => {
            let (field, other) = match (a, b) {
                (Operand::Data(path), other) | (other, Operand::Data(path))
                    if path.len() == 1 && !matches!(other, Operand::Data(_) | Operand::Id) =>
                {
                    (&path[0], other)
                }
                _ => return Some(Vec::new()),
            };
            if *other == Operand::Literal(Value::Null) {
                // "absent" is not an equality the store's filter can express exactly.
                return Some(Vec::new());
            }
            // An absent side never compares equal: the rule cannot hold at all.
            let want = resolve(other, ctx)?;
            Some(vec![(field.clone(), want)])
        }
        _ => Some(Vec::new()),
    }
}

/// The error for a denied request: the caller is known but not allowed.
pub fn forbidden(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::Forbidden, message)
}

// ---- the rule language ------------------------------------------------------------

/// A parsed rule expression.
#[derive(Debug, Clone)]
pub struct Rule(Arc<Expr>);

/// Two rules are the same when they parse to the same expression, so a reload that
/// only reformats a rule changes nothing.
impl PartialEq for Rule {
    fn eq(&self, other: &Rule) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    /// A bare value: true only if it is JSON `true`.
    Truthy(Operand),
    Eq(Operand, Operand),
    Ne(Operand, Operand),
    In(Operand, Operand),
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Literal(Value),
    /// `data.a.b`: a field of the record's body.
    Data(Vec<String>),
    /// `token.a.b`: a claim.
    Token(Vec<String>),
    Id,
    Resource,
    Room,
    Topic,
}

/// Everything a rule can look at.
struct Ctx<'a> {
    who: &'a Identity,
    data: Option<&'a Data>,
    id: Option<&'a str>,
    resource: Option<&'a str>,
    room: Option<&'a str>,
    topic: Option<&'a str>,
}

impl<'a> Ctx<'a> {
    fn resource(
        who: &'a Identity,
        resource: &'a ResourceName,
        id: Option<&'a RecordId>,
        data: Option<&'a Data>,
    ) -> Ctx<'a> {
        Ctx {
            who,
            data,
            id: id.map(RecordId::as_str),
            resource: Some(resource.as_str()),
            room: None,
            topic: None,
        }
    }

    fn named(who: &'a Identity, kind: &str, name: &'a str) -> Ctx<'a> {
        Ctx {
            who,
            data: None,
            id: None,
            resource: None,
            room: (kind == "room").then_some(name),
            topic: (kind == "topic").then_some(name),
        }
    }
}

/// Deeper nesting than this is refused, so a hostile config cannot overflow the stack.
const MAX_DEPTH: usize = 32;
/// Longer rules are refused; real ones are a line.
const MAX_RULE_BYTES: usize = 4096;

impl Rule {
    pub fn parse(text: &str) -> std::result::Result<Rule, String> {
        if text.len() > MAX_RULE_BYTES {
            return Err(format!("a rule is at most {MAX_RULE_BYTES} bytes"));
        }
        let tokens = lex(text)?;
        let mut p = Parser { tokens, at: 0 };
        let expr = p.or(0)?;
        match p.tokens.get(p.at) {
            None => Ok(Rule(Arc::new(expr))),
            Some(t) => Err(format!("unexpected {} after the end of the rule", t.show())),
        }
    }

    /// Whether the rule looks at the record (its data or id), so it must be evaluated
    /// per record rather than once per caller.
    fn uses_record(&self) -> bool {
        fn operand(o: &Operand) -> bool {
            matches!(o, Operand::Data(_) | Operand::Id)
        }
        fn expr(e: &Expr) -> bool {
            match e {
                Expr::Or(v) | Expr::And(v) => v.iter().any(expr),
                Expr::Not(e) => expr(e),
                Expr::Truthy(o) => operand(o),
                Expr::Eq(a, b) | Expr::Ne(a, b) | Expr::In(a, b) => operand(a) || operand(b),
            }
        }
        expr(&self.0)
    }

    fn eval(&self, ctx: &Ctx<'_>) -> bool {
        eval(&self.0, ctx)
    }
}

fn eval(e: &Expr, ctx: &Ctx<'_>) -> bool {
    match e {
        Expr::Or(v) => v.iter().any(|e| eval(e, ctx)),
        Expr::And(v) => v.iter().all(|e| eval(e, ctx)),
        Expr::Not(e) => !eval(e, ctx),
        Expr::Truthy(o) => matches!(resolve(o, ctx), Some(Value::Bool(true))),
        Expr::Eq(a, b) => equal(a, b, ctx).unwrap_or(false),
        Expr::Ne(a, b) => equal(a, b, ctx).is_some_and(|eq| !eq),
        Expr::In(a, b) => match (resolve(a, ctx), resolve(b, ctx)) {
            (Some(item), Some(Value::Array(list))) => list.contains(&item),
            _ => false,
        },
    }
}

/// `Some(equal)` when both sides are present, `None` when a side is absent. A literal
/// `null` on either side asks "is the other side absent?".
fn equal(a: &Operand, b: &Operand, ctx: &Ctx<'_>) -> Option<bool> {
    let null = Operand::Literal(Value::Null);
    if *a == null || *b == null {
        let other = if *a == null { b } else { a };
        return Some(resolve(other, ctx).is_none());
    }
    match (resolve(a, ctx), resolve(b, ctx)) {
        (Some(x), Some(y)) => Some(x == y),
        _ => None,
    }
}

/// The operand's value; `None` when it is missing or JSON `null`.
fn resolve(o: &Operand, ctx: &Ctx<'_>) -> Option<Value> {
    let text = |s: Option<&str>| s.map(|s| Value::String(s.to_owned()));
    let v = match o {
        Operand::Literal(v) => Some(v.clone()),
        Operand::Data(path) => walk(ctx.data?, path),
        Operand::Token(path) => walk(&ctx.who.claims, path),
        Operand::Id => text(ctx.id),
        Operand::Resource => text(ctx.resource),
        Operand::Room => text(ctx.room),
        Operand::Topic => text(ctx.topic),
    };
    v.filter(|v| !v.is_null())
}

fn walk(root: &Data, path: &[String]) -> Option<Value> {
    let (first, rest) = path.split_first()?;
    let mut at = root.get(first)?;
    for seg in rest {
        at = at.as_object()?.get(seg)?;
    }
    Some(at.clone())
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Num(serde_json::Number),
    Dot,
    Open,
    Close,
    Not,
    Eq,
    Ne,
    And,
    Or,
}

impl Token {
    fn show(&self) -> String {
        match self {
            Token::Word(w) => format!("{w:?}"),
            Token::Str(s) => format!("string {s:?}"),
            Token::Num(n) => format!("number {n}"),
            Token::Dot => "'.'".into(),
            Token::Open => "'('".into(),
            Token::Close => "')'".into(),
            Token::Not => "'!'".into(),
            Token::Eq => "'=='".into(),
            Token::Ne => "'!='".into(),
            Token::And => "'&&'".into(),
            Token::Or => "'||'".into(),
        }
    }
}

fn lex(text: &str) -> std::result::Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        let next = chars.get(i + 1).copied();
        match c {
            c if c.is_whitespace() => i += 1,
            '(' | ')' | '.' => {
                out.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    _ => Token::Dot,
                });
                i += 1;
            }
            '=' if next == Some('=') => {
                out.push(Token::Eq);
                i += 2;
            }
            '!' if next == Some('=') => {
                out.push(Token::Ne);
                i += 2;
            }
            '!' => {
                out.push(Token::Not);
                i += 1;
            }
            '&' if next == Some('&') => {
                out.push(Token::And);
                i += 2;
            }
            '|' if next == Some('|') => {
                out.push(Token::Or);
                i += 2;
            }
            '"' | '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("a string is not closed".into()),
                        Some(&q) if q == c => break,
                        Some('\\') => {
                            match chars.get(i + 1) {
                                Some(e @ ('\\' | '"' | '\'')) => s.push(*e),
                                _ => return Err("only \\\\, \\\" and \\' escapes exist".into()),
                            }
                            i += 1;
                        }
                        Some(&ch) => s.push(ch),
                    }
                    i += 1;
                }
                out.push(Token::Str(s));
                i += 1;
            }
            c if c.is_ascii_digit() || (c == '-' && next.is_some_and(|n| n.is_ascii_digit())) => {
                let start = i;
                i += 1;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_ascii_digit() || *c == '.')
                {
                    i += 1;
                }
                let s: String = chars[start..i].iter().collect();
                let n: serde_json::Number =
                    s.parse().map_err(|_| format!("{s:?} is not a number"))?;
                out.push(Token::Num(n));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                {
                    i += 1;
                }
                out.push(Token::Word(chars[start..i].iter().collect()));
            }
            c => return Err(format!("unexpected {c:?}")),
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn eat(&mut self, t: &Token) -> bool {
        if self.peek() == Some(t) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self, depth: usize) -> std::result::Result<Expr, String> {
        if depth > MAX_DEPTH {
            return Err(format!("a rule nests at most {MAX_DEPTH} deep"));
        }
        let mut parts = vec![self.and(depth)?];
        while self.eat(&Token::Or) {
            parts.push(self.and(depth)?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::Or(parts)
        })
    }

    fn and(&mut self, depth: usize) -> std::result::Result<Expr, String> {
        let mut parts = vec![self.not(depth)?];
        while self.eat(&Token::And) {
            parts.push(self.not(depth)?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::And(parts)
        })
    }

    fn not(&mut self, depth: usize) -> std::result::Result<Expr, String> {
        if self.eat(&Token::Not) {
            if depth > MAX_DEPTH {
                return Err(format!("a rule nests at most {MAX_DEPTH} deep"));
            }
            return Ok(Expr::Not(Box::new(self.not(depth + 1)?)));
        }
        if self.eat(&Token::Open) {
            let e = self.or(depth + 1)?;
            if !self.eat(&Token::Close) {
                return Err("a '(' is not closed".into());
            }
            return Ok(e);
        }
        let a = self.operand()?;
        let op = match self.peek() {
            Some(Token::Eq) => Expr::Eq as fn(Operand, Operand) -> Expr,
            Some(Token::Ne) => Expr::Ne,
            Some(Token::Word(w)) if w == "in" => Expr::In,
            _ => return Ok(Expr::Truthy(a)),
        };
        self.at += 1;
        let b = self.operand()?;
        Ok(op(a, b))
    }

    fn operand(&mut self) -> std::result::Result<Operand, String> {
        let Some(t) = self.peek().cloned() else {
            return Err("the rule ends where a value was expected".into());
        };
        self.at += 1;
        match t {
            Token::Str(s) => Ok(Operand::Literal(Value::String(s))),
            Token::Num(n) => Ok(Operand::Literal(Value::Number(n))),
            Token::Word(w) => match w.as_str() {
                "true" => Ok(Operand::Literal(Value::Bool(true))),
                "false" => Ok(Operand::Literal(Value::Bool(false))),
                "null" => Ok(Operand::Literal(Value::Null)),
                "id" => Ok(Operand::Id),
                "resource" => Ok(Operand::Resource),
                "room" => Ok(Operand::Room),
                "topic" => Ok(Operand::Topic),
                "data" => Ok(Operand::Data(self.path("data")?)),
                "token" => Ok(Operand::Token(self.path("token")?)),
                other => Err(format!(
                    "unknown name {other:?}; use data.<field>, token.<claim>, id, resource, room, topic, a string, a number, true, false or null"
                )),
            },
            other => Err(format!("expected a value, found {}", other.show())),
        }
    }

    /// `.a.b` or `."https://example.com/roles"` after `data` / `token`.
    fn path(&mut self, root: &str) -> std::result::Result<Vec<String>, String> {
        let mut path = Vec::new();
        while self.eat(&Token::Dot) {
            match self.peek().cloned() {
                Some(Token::Word(w) | Token::Str(w)) => {
                    path.push(w);
                    self.at += 1;
                }
                _ => return Err(format!("expected a field name after '{root}.'")),
            }
        }
        if path.is_empty() {
            return Err(format!("{root} needs a field: {root}.<name>"));
        }
        Ok(path)
    }
}

/// Whether a room belongs to a record: `<resource>/<id>` with valid names (seed 003's
/// documents-as-rooms). Joining it needs read access to that record.
pub fn record_room(room: &str) -> Option<(ResourceName, RecordId)> {
    let (resource, id) = room.split_once('/')?;
    Some((
        ResourceName::parse(resource).ok()?,
        RecordId::parse(id).ok()?,
    ))
}

/// Checks a write against the record before and after it: the caller must be allowed
/// to write the record as it stands (if it exists) and as it would become (unless it
/// is deleted).
pub(crate) fn check_write(
    access: &Access,
    who: &Identity,
    resource: &ResourceName,
    id: &RecordId,
    before: Option<&Data>,
    after: Option<&Data>,
) -> Result<()> {
    let denied = || forbidden(format!("{} may not write {resource}/{id}", who.describe()));
    if let Some(before) = before {
        if !access.may_write(who, resource, id, Some(before)) {
            return Err(denied());
        }
    }
    if let Some(after) = after {
        if !access.may_write(who, resource, id, Some(after)) {
            return Err(denied());
        }
    }
    if before.is_none() && after.is_none() && !access.may_write(who, resource, id, None) {
        return Err(denied());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Data {
        v.as_object().cloned().unwrap_or_default()
    }

    fn who(claims: Value) -> Arc<Identity> {
        Arc::new(Identity::from_claims(obj(claims)))
    }

    fn res(s: &str) -> ResourceName {
        ResourceName::parse(s).unwrap()
    }

    fn id(s: &str) -> RecordId {
        RecordId::parse(s).unwrap()
    }

    fn rule_holds(rule: &str, claims: Value, data: Value) -> bool {
        let rule = Rule::parse(rule).unwrap();
        let w = who(claims);
        let (r, i, d) = (res("todos"), id("a"), obj(data));
        rule.eval(&Ctx::resource(&w, &r, Some(&i), Some(&d)))
    }

    #[test]
    fn owner_rule_matches_only_the_owner() {
        let rule = "data.owner == token.sub";
        assert!(rule_holds(
            rule,
            json!({"sub": "ann"}),
            json!({"owner": "ann"})
        ));
        assert!(!rule_holds(
            rule,
            json!({"sub": "bob"}),
            json!({"owner": "ann"})
        ));
        // Absent on both sides is not equality: an anonymous caller never owns an
        // ownerless record.
        assert!(!rule_holds(rule, json!({}), json!({})));
        assert!(!rule_holds(
            rule,
            json!({"sub": null}),
            json!({"owner": null})
        ));
        assert!(!rule_holds(
            "data.owner != token.sub",
            json!({}),
            json!({"owner": "x"})
        ));
    }

    #[test]
    fn operators_and_literals() {
        let admin = json!({"sub": "ann", "role": "admin", "groups": ["a", "b"], "n": 3});
        assert!(rule_holds(
            "token.role == 'admin'",
            admin.clone(),
            json!({})
        ));
        assert!(rule_holds(
            "token.role == \"admin\" && true",
            admin.clone(),
            json!({})
        ));
        assert!(!rule_holds(
            "false || token.role == 'user'",
            admin.clone(),
            json!({})
        ));
        assert!(rule_holds("'b' in token.groups", admin.clone(), json!({})));
        assert!(!rule_holds("'c' in token.groups", admin.clone(), json!({})));
        assert!(rule_holds(
            "token.sub in data.members",
            admin.clone(),
            json!({"members": ["ann"]})
        ));
        assert!(rule_holds(
            "token.n == 3 && token.n != -1.5",
            admin.clone(),
            json!({})
        ));
        assert!(rule_holds(
            "data.public",
            admin.clone(),
            json!({"public": true})
        ));
        assert!(!rule_holds(
            "data.public",
            admin.clone(),
            json!({"public": "yes"})
        ));
        assert!(rule_holds("!data.archived", admin.clone(), json!({})));
        assert!(rule_holds(
            "data.owner == null",
            admin.clone(),
            json!({"owner": null})
        ));
        assert!(rule_holds("null == data.owner", admin.clone(), json!({})));
        assert!(!rule_holds(
            "data.owner == null",
            admin.clone(),
            json!({"owner": 1})
        ));
        assert!(rule_holds(
            "data.meta.by == token.sub",
            admin.clone(),
            json!({"meta": {"by": "ann"}})
        ));
        assert!(rule_holds(
            "id == 'a' && resource == 'todos'",
            admin.clone(),
            json!({})
        ));
        assert!(rule_holds(
            "(token.role == 'x' || token.role == 'admin') && !(data.locked == true)",
            admin.clone(),
            json!({"locked": false})
        ));
        assert!(rule_holds(
            "token.\"https://example.com/roles\" == 'ops'",
            json!({"https://example.com/roles": "ops"}),
            json!({})
        ));
    }

    #[test]
    fn bad_rules_are_refused_not_panicked_on() {
        for bad in [
            "",
            "(",
            ")",
            "data",
            "data.",
            "token ==",
            "owner == 1",
            "a && ",
            "'open",
            "1 == 1 1",
            "\"\\x\"",
            "data.a === 1",
            "&",
            "|",
            "#",
            "--1",
            "1.2.3 == 1",
            &"(".repeat(100),
            &"!".repeat(100),
        ] {
            assert!(Rule::parse(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(Rule::parse(&"x".repeat(MAX_RULE_BYTES + 1)).is_err());
    }

    #[test]
    fn patterns_pick_the_most_specific_rule() {
        let access = Access::with_rules(RuleSet {
            resources: vec![
                ("*".into(), Some("true".into()), None),
                ("todo*".into(), Some("false".into()), None),
                ("todos".into(), Some("data.owner == token.sub".into()), None),
            ],
            ..RuleSet::default()
        })
        .unwrap();
        let ann = who(json!({"sub": "ann"}));
        let mine = obj(json!({"owner": "ann"}));
        let theirs = obj(json!({"owner": "bob"}));
        assert!(access.may_read(&ann, &res("todos"), &id("a"), &mine));
        assert!(!access.may_read(&ann, &res("todos"), &id("a"), &theirs));
        assert!(!access.may_read(&ann, &res("todo_lists"), &id("a"), &mine));
        assert!(access.may_read(&ann, &res("notes"), &id("a"), &theirs));
        assert!(matches!(
            access.read_guard(&ann, &res("notes")),
            ReadGuard::All
        ));
        assert!(matches!(
            access.read_guard(&ann, &res("todo_x")),
            ReadGuard::None
        ));
        assert!(matches!(
            access.read_guard(&ann, &res("todos")),
            ReadGuard::Check(_)
        ));
        // No write rule: writes are denied.
        assert!(!access.may_write(&ann, &res("todos"), &id("a"), Some(&mine)));
        assert!(Access::with_rules(RuleSet {
            resources: vec![("bad pattern".into(), None, None)],
            ..RuleSet::default()
        })
        .is_err());
    }

    #[test]
    fn owner_rules_narrow_queries_to_the_callers_records() {
        let rules = |read: &str| {
            Access::with_rules(RuleSet {
                resources: vec![("todos".into(), Some(read.into()), None)],
                ..RuleSet::default()
            })
            .unwrap()
        };
        let ann = who(json!({"sub": "ann", "team": 7}));
        let q = |filter: Value| Query {
            filter: obj(filter),
            ..Query::default()
        };
        let narrow =
            |read: &str, query: &Query| rules(read).read_guard(&ann, &res("todos")).narrow(query);
        let owner = "data.owner == token.sub";
        assert_eq!(
            narrow(owner, &q(json!({}))),
            Some(q(json!({"owner": "ann"})))
        );
        assert_eq!(
            narrow(
                "token.team == data.team && data.kind == 'x' && data.n != 1",
                &q(json!({"a": 1}))
            ),
            Some(q(json!({"a": 1, "team": 7, "kind": "x"})))
        );
        assert_eq!(
            narrow(owner, &q(json!({"owner": "bob"}))),
            None,
            "a conflicting filter"
        );
        assert_eq!(
            narrow(owner, &q(json!({"owner": "ann"}))),
            Some(q(json!({"owner": "ann"})))
        );
        // Nothing to narrow by: disjunctions, nested fields, comparisons with null.
        for read in [
            "data.owner == token.sub || data.public",
            "data.meta.owner == token.sub",
            "data.owner == null",
            "data.a == data.b",
        ] {
            assert_eq!(narrow(read, &q(json!({}))), Some(q(json!({}))), "{read}");
        }
        // A token without `sub` can own nothing.
        let anon = Arc::new(Identity::anonymous());
        let guard = rules(owner).read_guard(&anon, &res("todos"));
        assert_eq!(guard.narrow(&q(json!({}))), None);
        assert_eq!(
            rules("data.a == 1 && data.a == 2")
                .read_guard(&ann, &res("todos"))
                .narrow(&q(json!({}))),
            None
        );
    }

    #[test]
    fn deny_by_default_and_open_without_rules() {
        let closed = Access::with_rules(RuleSet::default()).unwrap();
        let ann = who(json!({"sub": "ann"}));
        let d = obj(json!({}));
        assert!(!closed.may_read(&ann, &res("x"), &id("a"), &d));
        assert!(!closed.may_write(&ann, &res("x"), &id("a"), None));
        assert!(!closed.may_subscribe_topic(&ann, "t"));
        assert!(!closed.may_publish(&ann, "t"));
        assert!(!closed.may_join_room(&ann, "lobby"));
        let open = Access::open();
        assert!(open.may_read(&ann, &res("x"), &id("a"), &d));
        assert!(open.may_write(&ann, &res("x"), &id("a"), None));
        assert!(open.may_subscribe_topic(&ann, "t") && open.may_publish(&ann, "t"));
        assert!(open.may_join_room(&ann, "lobby"));
    }

    #[test]
    fn writes_are_checked_before_and_after() {
        let access = Access::with_rules(RuleSet {
            resources: vec![("todos".into(), None, Some("data.owner == token.sub".into()))],
            ..RuleSet::default()
        })
        .unwrap();
        let ann = who(json!({"sub": "ann"}));
        let (r, i) = (res("todos"), id("a"));
        let mine = obj(json!({"owner": "ann"}));
        let theirs = obj(json!({"owner": "bob"}));
        assert!(check_write(&access, &ann, &r, &i, None, Some(&mine)).is_ok());
        assert!(check_write(&access, &ann, &r, &i, Some(&mine), None).is_ok());
        let e = check_write(&access, &ann, &r, &i, Some(&mine), Some(&theirs)).unwrap_err();
        assert_eq!(e.code, ErrorCode::Forbidden);
        assert!(check_write(&access, &ann, &r, &i, Some(&theirs), Some(&mine)).is_err());
        assert!(check_write(&access, &ann, &r, &i, None, Some(&theirs)).is_err());
    }

    #[test]
    fn identity_from_claims() {
        let w = Identity::from_claims(obj(json!({"sub": 42, "exp": 1700000000})));
        assert_eq!(w.subject.as_deref(), Some("42"));
        assert_eq!(w.expires_at, Some(1700000000));
        assert!(Identity::anonymous().is_anonymous());
        assert!(record_room("documents/abc").is_some());
        assert!(record_room("lobby").is_none());
        assert!(record_room("a/b/c").is_none());
    }
}
