//! Topology drawings: Graphviz DOT (for `dot -Tsvg` and the `graph` command) and a
//! self-contained SVG drawn here, so the status page needs no Graphviz and no script library.
//!
//! Both drawings come from one [`Graph`]: nodes (topics, agents, tables) and edges (data flow,
//! internal topics, failure paths). The SVG lays the nodes out in layers by longest path from
//! the topics nothing writes (in the simple case: topics read, agents, tables and topics
//! written, changelogs), orders each layer by the mean position of its predecessors, and draws
//! edges that point backwards (`group_by` repartition and retry topics read back by their
//! agent) as curves under the nodes.

use std::fmt::Write as _;

use crate::wiring::topology::{TableKind, TopicKind, Topology};

/// What a node stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Agent,
    Topic(TopicKind),
    Table(TableKind),
}

impl Kind {
    /// Nodes are identified by category and name: a topic and an agent may share a name.
    fn category(self) -> &'static str {
        match self {
            Kind::Agent => "agent",
            Kind::Topic(_) => "topic",
            Kind::Table(_) => "table",
        }
    }

    /// Internal topics (rill's own) are drawn lighter.
    fn internal(self) -> bool {
        matches!(
            self,
            Kind::Topic(
                TopicKind::Repartition
                    | TopicKind::Changelog
                    | TopicKind::DeadLetter
                    | TopicKind::Retry
            )
        )
    }

    fn describe(self) -> &'static str {
        match self {
            Kind::Agent => "agent",
            Kind::Topic(TopicKind::User) => "topic",
            Kind::Topic(TopicKind::Repartition) => "repartition topic",
            Kind::Topic(TopicKind::Changelog) => "changelog topic",
            Kind::Topic(TopicKind::DeadLetter) => "dead-letter topic",
            Kind::Topic(TopicKind::Retry) => "retry topic",
            Kind::Topic(TopicKind::Global) => "global table topic",
            Kind::Table(TableKind::Table) => "table",
            Kind::Table(TableKind::Window) => "window table",
            Kind::Table(TableKind::Global) => "global table",
        }
    }
}

/// How an edge is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Records an agent reads or writes, table writes and reads.
    Data,
    /// rill's own plumbing: changelogs, repartition topics.
    Internal,
    /// Dead letters and retry topics (dashed).
    Failure,
}

#[derive(Debug)]
struct Node<'a> {
    kind: Kind,
    name: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Edge {
    from: usize,
    to: usize,
    flow: Flow,
    /// Drawn against the layering (read back by the agent that wrote it): never a layer cause.
    back: bool,
    label: Option<&'static str>,
}

/// The topology as nodes and edges, each once.
#[derive(Debug, Default)]
struct Graph<'a> {
    nodes: Vec<Node<'a>>,
    edges: Vec<Edge>,
}

impl<'a> Graph<'a> {
    fn build(t: &'a Topology) -> Self {
        let mut g = Graph::default();
        let topic_kind = |name: &str| {
            t.topics
                .iter()
                .find(|n| n.name == name)
                .map_or(TopicKind::User, |n| n.kind)
        };
        let table_kind = |name: &str| {
            t.tables
                .iter()
                .find(|n| n.name == name)
                .map_or(TableKind::Table, |n| n.kind)
        };
        for a in &t.agents {
            // Sources first, so the first layer lists them in the agents' order.
            for s in &a.sources {
                g.node(Kind::Topic(topic_kind(s)), s);
            }
            let agent = g.node(Kind::Agent, &a.name);
            for s in &a.sources {
                let kind = topic_kind(s);
                let topic = g.node(Kind::Topic(kind), s);
                if kind == TopicKind::Retry {
                    g.edge(agent, topic, Flow::Failure, false, Some("retry"));
                    g.edge(topic, agent, Flow::Failure, true, None);
                } else {
                    g.edge(topic, agent, Flow::Data, false, None);
                }
            }
            for s in &a.sinks {
                let topic = g.node(Kind::Topic(topic_kind(s)), s);
                g.edge(agent, topic, Flow::Data, false, None);
            }
            for r in &a.repartition {
                let topic = g.node(Kind::Topic(TopicKind::Repartition), r);
                g.edge(agent, topic, Flow::Internal, false, Some("group_by"));
                g.edge(topic, agent, Flow::Internal, true, None);
            }
            for name in &a.tables {
                let table = g.node(Kind::Table(table_kind(name)), name);
                g.edge(agent, table, Flow::Data, false, None);
            }
            for name in &a.global_tables {
                let table = g.node(Kind::Table(TableKind::Global), name);
                g.edge(table, agent, Flow::Data, false, None);
            }
            if !a.dead_letter.is_empty() {
                let topic = g.node(Kind::Topic(TopicKind::DeadLetter), &a.dead_letter);
                g.edge(agent, topic, Flow::Failure, false, Some("dead letters"));
            }
        }
        for table in &t.tables {
            let node = g.node(Kind::Table(table.kind), &table.name);
            let log = g.node(Kind::Topic(topic_kind(&table.changelog)), &table.changelog);
            match (table.kind, &table.agent) {
                (TableKind::Global, _) | (_, None) => {
                    g.edge(log, node, Flow::Data, false, None);
                }
                (_, Some(agent)) => {
                    let agent = g.node(Kind::Agent, agent);
                    g.edge(agent, node, Flow::Data, false, None);
                    g.edge(node, log, Flow::Internal, false, Some("changelog"));
                }
            }
        }
        for topic in &t.topics {
            g.node(Kind::Topic(topic.kind), &topic.name);
        }
        g
    }

    /// The node of this category and name, added with `kind` when new.
    fn node(&mut self, kind: Kind, name: &'a str) -> usize {
        let found = self
            .nodes
            .iter()
            .position(|n| n.name == name && n.kind.category() == kind.category());
        found.unwrap_or_else(|| {
            self.nodes.push(Node { kind, name });
            self.nodes.len() - 1
        })
    }

    fn edge(
        &mut self,
        from: usize,
        to: usize,
        flow: Flow,
        back: bool,
        label: Option<&'static str>,
    ) {
        if !self.edges.iter().any(|e| e.from == from && e.to == to) {
            self.edges.push(Edge {
                from,
                to,
                flow,
                back,
                label,
            });
        }
    }

    fn id(&self, i: usize) -> String {
        let n = &self.nodes[i];
        format!("{}:{}", n.kind.category(), n.name)
    }
}

/// The topology in Graphviz DOT: topics as ellipses (internal ones grey, dead letters red,
/// global-table topics doubled), agents as boxes, tables as cylinders; failure paths dashed.
pub(crate) fn to_dot(t: &Topology) -> String {
    let g = Graph::build(t);
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", dot_str(&t.app));
    out.push_str("  rankdir=LR;\n");
    out.push_str("  node [fontname=\"Helvetica\", fontsize=11];\n");
    out.push_str("  edge [fontname=\"Helvetica\", fontsize=9, color=\"#4b5563\"];\n");
    for (i, n) in g.nodes.iter().enumerate() {
        let style = match n.kind {
            Kind::Agent => "shape=box, style=\"filled,bold\", fillcolor=\"#dbeafe\"",
            Kind::Topic(TopicKind::User) => "shape=ellipse",
            Kind::Topic(TopicKind::Global) => "shape=ellipse, peripheries=2",
            Kind::Topic(TopicKind::DeadLetter) => {
                "shape=ellipse, style=dashed, color=\"#b91c1c\", fontcolor=\"#b91c1c\""
            }
            Kind::Topic(_) => {
                "shape=ellipse, style=filled, fillcolor=\"#f3f4f6\", color=\"#9ca3af\", fontcolor=\"#6b7280\""
            }
            Kind::Table(TableKind::Window) => "shape=cylinder, style=filled, fillcolor=\"#fef3c7\"",
            Kind::Table(_) => "shape=cylinder, style=filled, fillcolor=\"#dcfce7\"",
        };
        let _ = writeln!(
            out,
            "  {} [label={}, tooltip={}, {style}];",
            dot_str(&g.id(i)),
            dot_str(n.name),
            dot_str(n.kind.describe()),
        );
    }
    for e in &g.edges {
        let mut attrs = Vec::new();
        match e.flow {
            Flow::Data => {}
            Flow::Internal => attrs.push("color=\"#9ca3af\"".to_owned()),
            Flow::Failure => attrs.push("style=dashed, color=\"#b91c1c\"".to_owned()),
        }
        if let Some(label) = e.label {
            attrs.push(format!("label={}", dot_str(label)));
        }
        if e.back {
            // Keeps the ranks left to right: the edge is drawn, the layout ignores it.
            attrs.push("constraint=false".to_owned());
        }
        let attrs = if attrs.is_empty() {
            String::new()
        } else {
            format!(" [{}]", attrs.join(", "))
        };
        let _ = writeln!(
            out,
            "  {} -> {}{attrs};",
            dot_str(&g.id(e.from)),
            dot_str(&g.id(e.to))
        );
    }
    out.push_str("}\n");
    out
}

/// A DOT quoted string.
fn dot_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

const NODE_H: f64 = 34.0;
/// Vertical distance between node tops (room for the rate line under agents).
const ROW: f64 = NODE_H + 26.0;
const GAP_X: f64 = 70.0;
const MARGIN: f64 = 20.0;
/// Labels longer than this are cut in the drawing (the full name is in the tooltip).
const MAX_LABEL: usize = 34;

/// Where a node is drawn: top-left corner and size.
#[derive(Debug, Clone, Copy)]
struct Place {
    x: f64,
    y: f64,
    w: f64,
}

impl Place {
    fn mid_y(self) -> f64 {
        self.y + NODE_H / 2.0
    }
}

/// Layers by longest path over the forward edges; nodes nothing points to sit just before
/// the first node they feed.
fn layers(g: &Graph<'_>) -> Vec<usize> {
    let n = g.nodes.len();
    let mut layer = vec![0usize; n];
    let forward: Vec<&Edge> = g.edges.iter().filter(|e| !e.back).collect();
    // At most n rounds: a cycle (agents feeding each other) stops growing there.
    for _ in 0..n {
        let mut changed = false;
        for e in &forward {
            if layer[e.to] < layer[e.from] + 1 && layer[e.from] < n {
                layer[e.to] = layer[e.from] + 1;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    for i in 0..n {
        let has_input = forward.iter().any(|e| e.to == i);
        let first_target = forward
            .iter()
            .filter(|e| e.from == i)
            .map(|e| layer[e.to])
            .min();
        if let (false, Some(first)) = (has_input, first_target) {
            layer[i] = first.saturating_sub(1);
        }
    }
    layer
}

/// Node positions, with the picture's width and height: the columns left to right, each
/// centred vertically, each node centred in its column's width.
fn place(g: &Graph<'_>) -> (Vec<Place>, f64, f64) {
    let columns = columns(g);
    let rows = columns.iter().map(Vec::len).max().unwrap_or(0) as f64;
    let mut places = vec![
        Place {
            x: 0.0,
            y: 0.0,
            w: 0.0
        };
        g.nodes.len()
    ];
    let mut x = MARGIN;
    for col in &columns {
        let width = col
            .iter()
            .map(|&i| node_width(g.nodes[i].name))
            .fold(0.0, f64::max);
        let top = MARGIN + (rows - col.len() as f64) * ROW / 2.0;
        for (pos, &i) in col.iter().enumerate() {
            let w = node_width(g.nodes[i].name);
            places[i] = Place {
                x: x + (width - w) / 2.0,
                y: top + pos as f64 * ROW,
                w,
            };
        }
        x += width + GAP_X;
    }
    let width = (x - GAP_X + MARGIN).max(2.0 * MARGIN);
    // Room under the last row for back edges.
    let height = MARGIN * 2.0 + rows * ROW + 20.0;
    (places, width, height)
}

/// Node indices by column: one column per layer, each ordered by its predecessors' mean row.
fn columns(g: &Graph<'_>) -> Vec<Vec<usize>> {
    let mut layer = layers(g);
    // Dense column numbers: a cycle can leave layers empty.
    let mut used = layer.clone();
    used.sort_unstable();
    used.dedup();
    for l in &mut layer {
        *l = used.partition_point(|u| u < l);
    }
    let count = used.len();
    let mut columns: Vec<Vec<usize>> = vec![Vec::new(); count];
    for (i, l) in layer.iter().enumerate() {
        columns[*l].push(i);
    }
    let mut row = vec![0.0f64; g.nodes.len()];
    for col in &mut columns {
        let key = |i: usize, row: &[f64]| {
            let preds: Vec<f64> = g
                .edges
                .iter()
                .filter(|e| e.to == i && !e.back && layer[e.from] < layer[i])
                .map(|e| row[e.from])
                .collect();
            if preds.is_empty() {
                None
            } else {
                Some(preds.iter().sum::<f64>() / preds.len() as f64)
            }
        };
        let mut keyed: Vec<(f64, usize)> = col
            .iter()
            .enumerate()
            .map(|(pos, &i)| (key(i, &row).unwrap_or(pos as f64), i))
            .collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
        *col = keyed.into_iter().map(|(_, i)| i).collect();
        for (pos, &i) in col.iter().enumerate() {
            row[i] = pos as f64;
        }
    }
    columns
}

fn label(name: &str) -> String {
    if name.chars().count() <= MAX_LABEL {
        name.to_owned()
    } else {
        let cut: String = name.chars().take(MAX_LABEL - 1).collect();
        format!("{cut}…")
    }
}

fn node_width(name: &str) -> f64 {
    (label(name).chars().count() as f64 * 7.0 + 28.0).max(80.0)
}

/// The topology as a standalone SVG (see the module docs for the layout). Agent nodes are
/// `<g class="agent" data-agent="..">` with an empty `<text class="rate">` under the box that
/// the status page fills; topics are `class="topic"` with `data-topic` and `data-kind`,
/// tables `class="table"` with `data-table`.
pub(crate) fn to_svg(t: &Topology) -> String {
    let g = Graph::build(t);
    let (places, width, height) = place(&g);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"rill-topology\" width=\"{width:.0}\" \
         height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" role=\"img\" \
         aria-label=\"topology of {}\" font-family=\"sans-serif\" font-size=\"12\">",
        xml(&t.app)
    );
    out.push_str(
        "<defs><marker id=\"rill-arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" \
         markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\">\
         <path d=\"M0,0 L10,5 L0,10 z\" fill=\"#4b5563\"/></marker>\
         <marker id=\"rill-arrow-fail\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" \
         markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\">\
         <path d=\"M0,0 L10,5 L0,10 z\" fill=\"#b91c1c\"/></marker></defs>\n",
    );
    if g.nodes.is_empty() {
        let _ = writeln!(
            out,
            "<text x=\"{MARGIN}\" y=\"{MARGIN}\" fill=\"#6b7280\">no agents</text>"
        );
    }
    for e in &g.edges {
        svg_edge(&mut out, &g, &places, e, height);
    }
    for (i, n) in g.nodes.iter().enumerate() {
        svg_node(&mut out, n, places[i]);
    }
    out.push_str("</svg>\n");
    out
}

fn svg_edge(out: &mut String, g: &Graph<'_>, places: &[Place], e: &Edge, height: f64) {
    let (a, b) = (places[e.from], places[e.to]);
    let path = if a.x < b.x {
        let (x1, y1, x2, y2) = (a.x + a.w, a.mid_y(), b.x, b.mid_y());
        let dx = ((x2 - x1) / 2.0).max(20.0);
        format!(
            "M{x1:.1},{y1:.1} C{:.1},{y1:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}",
            x1 + dx,
            x2 - dx
        )
    } else if b.x + b.w < a.x {
        // Backwards (read back by the agent that wrote it): through the gap between the
        // columns, just under the forward edge, so the two read as a pair.
        let (x1, y1, x2, y2) = (a.x, a.mid_y() + 8.0, b.x + b.w, b.mid_y() + 8.0);
        let dx = ((x1 - x2) / 2.0).max(20.0);
        format!(
            "M{x1:.1},{y1:.1} C{:.1},{:.1} {:.1},{:.1} {x2:.1},{y2:.1}",
            x1 - dx,
            y1 + 14.0,
            x2 + dx,
            y2 + 14.0
        )
    } else {
        // Same column (a cycle): a loop under both nodes.
        let (x1, y1) = (a.x + a.w / 2.0, a.y + NODE_H);
        let (x2, y2) = (b.x + b.w / 2.0 + 10.0, b.y + NODE_H);
        let low = (y1.max(y2) + 34.0).min(height - 4.0);
        format!("M{x1:.1},{y1:.1} C{x1:.1},{low:.1} {x2:.1},{low:.1} {x2:.1},{y2:.1}")
    };
    let (stroke, dash, marker) = match e.flow {
        Flow::Data => ("#4b5563", "", "rill-arrow"),
        Flow::Internal => ("#9ca3af", "", "rill-arrow"),
        Flow::Failure => ("#b91c1c", " stroke-dasharray=\"5,4\"", "rill-arrow-fail"),
    };
    let title = format!(
        "{} → {}{}",
        g.nodes[e.from].name,
        g.nodes[e.to].name,
        e.label.map(|l| format!(" ({l})")).unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "<path class=\"edge\" d=\"{path}\" fill=\"none\" stroke=\"{stroke}\" stroke-width=\"1.3\"{dash} \
         marker-end=\"url(#{marker})\"><title>{}</title></path>",
        xml(&title)
    );
}

fn svg_node(out: &mut String, n: &Node<'_>, p: Place) {
    let name = xml(n.name);
    let (cx, cy) = (p.x + p.w / 2.0, p.mid_y());
    let text_fill = if n.kind.internal() {
        "#6b7280"
    } else {
        "#111827"
    };
    match n.kind {
        Kind::Agent => svg_agent_shape(out, &name, p),
        Kind::Topic(kind) => svg_topic_shape(out, n, &name, kind, p),
        Kind::Table(kind) => svg_table_shape(out, n, &name, kind, p),
    }
    let _ = write!(
        out,
        "<text x=\"{cx:.1}\" y=\"{cy:.1}\" text-anchor=\"middle\" dominant-baseline=\"central\" \
         fill=\"{text_fill}\">{}</text>",
        xml(&label(n.name))
    );
    if n.kind == Kind::Agent {
        let _ = write!(
            out,
            "<text class=\"rate\" x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" \
             font-size=\"10\" fill=\"#1d4ed8\"></text>",
            p.y + NODE_H + 12.0
        );
    }
    out.push_str("</g>\n");
}

/// Opens an agent's `<g>` and draws its box.
fn svg_agent_shape(out: &mut String, name: &str, p: Place) {
    let _ = write!(
        out,
        "<g class=\"agent\" data-agent=\"{name}\"><title>agent {name}</title>\
         <rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{NODE_H}\" rx=\"4\" \
         fill=\"#dbeafe\" stroke=\"#1d4ed8\" stroke-width=\"2\"/>",
        p.x, p.y, p.w
    );
}

/// Opens a topic's `<g>` and draws its pill (doubled for a topic read into a global table).
fn svg_topic_shape(out: &mut String, n: &Node<'_>, name: &str, kind: TopicKind, p: Place) {
    let (fill, stroke, dash) = match kind {
        TopicKind::User => ("#ffffff", "#374151", ""),
        TopicKind::Global => ("#ffffff", "#374151", ""),
        TopicKind::DeadLetter => ("#fef2f2", "#b91c1c", " stroke-dasharray=\"4,3\""),
        _ => ("#f9fafb", "#d1d5db", ""),
    };
    let _ = write!(
        out,
        "<g class=\"topic\" data-topic=\"{name}\" data-kind=\"{}\"><title>{} {name}</title>\
         <rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{NODE_H}\" rx=\"{}\" \
         fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"1.2\"{dash}/>",
        topic_kind(kind),
        n.kind.describe(),
        p.x,
        p.y,
        p.w,
        NODE_H / 2.0
    );
    if kind == TopicKind::Global {
        let _ = write!(
            out,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{}\" rx=\"{}\" \
             fill=\"none\" stroke=\"{stroke}\"/>",
            p.x + 3.0,
            p.y + 3.0,
            p.w - 6.0,
            NODE_H - 6.0,
            NODE_H / 2.0 - 3.0
        );
    }
}

/// Opens a table's `<g>` and draws its cylinder.
fn svg_table_shape(out: &mut String, n: &Node<'_>, name: &str, kind: TableKind, p: Place) {
    let fill = if kind == TableKind::Window {
        "#fef3c7"
    } else {
        "#dcfce7"
    };
    let e = 5.0;
    let body = NODE_H - 2.0 * e;
    let _ = write!(
        out,
        "<g class=\"table\" data-table=\"{name}\"><title>{} {name}</title>\
         <path d=\"M{x:.1},{y:.1} a{r:.1},{e} 0 1 0 {w:.1},0 a{r:.1},{e} 0 1 0 -{w:.1},0 \
         v{body:.1} a{r:.1},{e} 0 0 0 {w:.1},0 v-{body:.1}\" fill=\"{fill}\" \
         stroke=\"#15803d\" stroke-width=\"1.2\"/>",
        n.kind.describe(),
        x = p.x,
        y = p.y + e,
        r = p.w / 2.0,
        w = p.w,
    );
}

fn topic_kind(kind: TopicKind) -> &'static str {
    match kind {
        TopicKind::User => "user",
        TopicKind::Repartition => "repartition",
        TopicKind::Changelog => "changelog",
        TopicKind::DeadLetter => "dead_letter",
        TopicKind::Retry => "retry",
        TopicKind::Global => "global",
    }
}

/// Text escaped for XML content and attribute values.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Not allowed in XML 1.0 at all.
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wiring::topology::{AgentNode, TableNode, TopicNode};

    fn agent(name: &str, sources: &[&str], sinks: &[&str]) -> AgentNode {
        AgentNode {
            name: name.to_owned(),
            group: format!("app-{name}"),
            concurrency: 1,
            sources: sources.iter().map(|s| (*s).to_owned()).collect(),
            sinks: sinks.iter().map(|s| (*s).to_owned()).collect(),
            repartition: Vec::new(),
            tables: Vec::new(),
            global_tables: Vec::new(),
            dead_letter: format!("app-{name}-dead-letters"),
        }
    }

    fn topic(name: &str, kind: TopicKind) -> TopicNode {
        TopicNode {
            name: name.to_owned(),
            kind,
        }
    }

    /// views → count (group_by, table totals → changelog) → counts → a<b&c; geo → cities → count.
    fn sample() -> Topology {
        let mut count = agent("count", &["views"], &["counts"]);
        count.repartition = vec!["app-count-url-repartition".into()];
        count.tables = vec!["totals".into()];
        count.global_tables = vec!["cities".into()];
        let weird = agent("a<b&c", &["counts"], &[]);
        Topology {
            app: "app\"x".into(),
            agents: vec![count, weird],
            topics: vec![
                topic("views", TopicKind::User),
                topic("counts", TopicKind::User),
                topic("app-count-url-repartition", TopicKind::Repartition),
                topic("app-count-dead-letters", TopicKind::DeadLetter),
                topic("app-a<b&c-dead-letters", TopicKind::DeadLetter),
                topic("app-totals-changelog", TopicKind::Changelog),
                topic("geo", TopicKind::Global),
            ],
            tables: vec![
                TableNode {
                    name: "totals".into(),
                    kind: TableKind::Table,
                    agent: Some("count".into()),
                    changelog: "app-totals-changelog".into(),
                },
                TableNode {
                    name: "cities".into(),
                    kind: TableKind::Global,
                    agent: None,
                    changelog: "geo".into(),
                },
            ],
        }
    }

    #[test]
    fn dot_has_every_node_and_edge() {
        let dot = to_dot(&sample());
        assert!(dot.starts_with("digraph \"app\\\"x\" {"), "{dot}");
        assert!(dot.trim_end().ends_with('}'));
        for node in [
            "\"topic:views\" [label=\"views\", tooltip=\"topic\", shape=ellipse]",
            "\"agent:count\" [label=\"count\", tooltip=\"agent\", shape=box",
            "\"agent:a<b&c\" [label=\"a<b&c\"",
            "\"table:totals\" [label=\"totals\", tooltip=\"table\", shape=cylinder",
            "\"table:cities\" [label=\"cities\", tooltip=\"global table\", shape=cylinder",
            "\"topic:geo\" [label=\"geo\", tooltip=\"global table topic\", shape=ellipse, peripheries=2",
            "\"topic:app-count-dead-letters\" [label=\"app-count-dead-letters\", tooltip=\"dead-letter topic\", shape=ellipse, style=dashed",
        ] {
            assert!(dot.contains(node), "missing {node} in\n{dot}");
        }
        for edge in [
            "\"topic:views\" -> \"agent:count\";",
            "\"agent:count\" -> \"topic:counts\";",
            "\"topic:counts\" -> \"agent:a<b&c\";",
            "\"agent:count\" -> \"topic:app-count-url-repartition\" [color=\"#9ca3af\", label=\"group_by\"];",
            "\"topic:app-count-url-repartition\" -> \"agent:count\" [color=\"#9ca3af\", constraint=false];",
            "\"agent:count\" -> \"table:totals\";",
            "\"table:totals\" -> \"topic:app-totals-changelog\" [color=\"#9ca3af\", label=\"changelog\"];",
            "\"agent:count\" -> \"topic:app-count-dead-letters\" [style=dashed, color=\"#b91c1c\", label=\"dead letters\"];",
            "\"topic:geo\" -> \"table:cities\";",
            "\"table:cities\" -> \"agent:count\";",
        ] {
            assert!(dot.contains(edge), "missing {edge} in\n{dot}");
        }
        assert_eq!(dot.matches(" -> ").count(), 11, "{dot}");
        assert_eq!(dot.matches('{').count(), dot.matches('}').count());
    }

    #[test]
    fn dot_names_a_topic_and_an_agent_of_one_name_apart() {
        let t = Topology {
            app: "a".into(),
            agents: vec![agent("same", &["same"], &[])],
            topics: vec![topic("same", TopicKind::User)],
            tables: Vec::new(),
        };
        assert!(to_dot(&t).contains("\"topic:same\" -> \"agent:same\";"));
    }

    /// Checks that tags nest and close, and that text and attribute values hold no raw `<`
    /// or stray `&` (the subset of XML the drawing uses).
    fn assert_well_formed(svg: &str) {
        let mut stack: Vec<&str> = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            check_text(&rest[..start]);
            let end = rest[start..].find('>').expect("tag closes") + start;
            let tag = &rest[start + 1..end];
            assert!(!tag.contains('<'), "raw < inside {tag}");
            for value in tag.split('"').skip(1).step_by(2) {
                check_text(value);
            }
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop(), Some(name), "closing {name}");
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().expect("tag name");
                stack.push(name);
            }
            rest = &rest[end + 1..];
        }
        check_text(rest);
        assert!(stack.is_empty(), "unclosed {stack:?}");
    }

    fn check_text(text: &str) {
        assert!(!text.contains('>'), "raw > in {text:?}");
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"]
                    .iter()
                    .any(|e| entity.starts_with(e)),
                "stray & in {text:?}"
            );
        }
    }

    #[test]
    fn svg_is_well_formed_with_escaped_names_and_hooks() {
        let svg = to_svg(&sample());
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert_well_formed(&svg);
        assert!(svg.contains("<g class=\"agent\" data-agent=\"count\">"));
        assert!(svg.contains("<g class=\"agent\" data-agent=\"a&lt;b&amp;c\">"));
        assert!(svg.contains(">a&lt;b&amp;c</text>"));
        assert!(svg.contains("<g class=\"topic\" data-topic=\"views\" data-kind=\"user\">"));
        assert!(svg.contains(
            "<g class=\"topic\" data-topic=\"app-count-url-repartition\" data-kind=\"repartition\">"
        ));
        assert!(svg.contains("<g class=\"table\" data-table=\"totals\">"));
        assert!(svg.contains("aria-label=\"topology of app&quot;x\""));
        assert_eq!(svg.matches("<g class=\"agent\"").count(), 2);
        assert_eq!(svg.matches("<g class=\"topic\"").count(), 7);
        assert_eq!(svg.matches("<g class=\"table\"").count(), 2);
        assert_eq!(svg.matches("<path class=\"edge\"").count(), 11);
        assert_eq!(
            svg.matches("stroke-dasharray=\"5,4\"").count(),
            2,
            "dead-letter edges"
        );
    }

    #[test]
    fn svg_layers_read_topics_agents_then_outputs() {
        let t = sample();
        let g = Graph::build(&t);
        let (places, width, height) = place(&g);
        let x = |kind: &str, name: &str| {
            let i = g
                .nodes
                .iter()
                .position(|n| n.kind.category() == kind && n.name == name)
                .expect(name);
            places[i].x
        };
        assert!(x("topic", "views") < x("agent", "count"));
        assert!(x("agent", "count") < x("table", "totals"));
        assert!(x("table", "totals") < x("topic", "app-totals-changelog"));
        assert!(x("agent", "count") < x("topic", "counts"));
        assert!(x("topic", "counts") < x("agent", "a<b&c"));
        assert!(x("topic", "geo") < x("table", "cities"));
        assert!(x("table", "cities") < x("agent", "count"));
        for p in &places {
            assert!(
                p.x >= 0.0 && p.x + p.w <= width && p.y + NODE_H <= height,
                "{p:?}"
            );
        }
    }

    #[test]
    fn long_names_are_cut_and_an_empty_topology_still_draws() {
        let name = "x".repeat(100);
        let t = Topology {
            app: "a".into(),
            agents: vec![agent(&name, &["t"], &[])],
            topics: vec![topic("t", TopicKind::User)],
            tables: Vec::new(),
        };
        let svg = to_svg(&t);
        assert!(svg.contains(&format!("data-agent=\"{name}\"")));
        assert!(svg.contains(&format!(">{}…</text>", "x".repeat(MAX_LABEL - 1))));
        let empty = Topology {
            app: "a".into(),
            agents: Vec::new(),
            topics: Vec::new(),
            tables: Vec::new(),
        };
        let svg = to_svg(&empty);
        assert_well_formed(&svg);
        assert!(svg.contains("no agents"));
    }
}
