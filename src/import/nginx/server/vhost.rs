//! NGINX name-based virtual hosts: a later `server` block on the addresses
//! of an earlier one becomes routes of the earlier block's frontend, each
//! asking for one of its `server_name`s.

use std::collections::BTreeSet;

use super::super::super::output::{quote, Item, Origin, Section, Value};
use super::super::Node;
use super::Ctx;

/// For a server block on addresses an earlier block listens on (NGINX's
/// name-based virtual hosts): the earlier plain frontend with exactly those
/// addresses, and the block's exact `server_name`s; Err says why it cannot
/// be merged (TLS, wildcards or regexes, `default_server`, other addresses).
pub(super) fn virtual_host_target(
    ctx: &Ctx,
    nodes: &[Node],
    plain: &[(String, Origin)],
    tls: &[(String, Origin)],
) -> Result<(usize, Vec<String>, Origin), String> {
    let refuse = |why: &str| {
        Err(format!(
            "a second server block on {} (virtual hosts) {why}: merge it by hand with `host` route conditions",
            plain
                .iter()
                .chain(tls)
                .map(|(a, _)| a.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    };
    if !tls.is_empty() {
        return refuse("with TLS");
    }
    if nodes
        .iter()
        .any(|n| n.name == "listen" && n.args.iter().any(|a| a == "default_server" || a == "default"))
    {
        return refuse("marked default_server");
    }
    let Some(names_node) = nodes.iter().find(|n| n.name == "server_name") else {
        return refuse("without server_name");
    };
    let names: Vec<String> = names_node.args.clone();
    if names.is_empty()
        || names
            .iter()
            .any(|n| n.is_empty() || n == "_" || n.contains('*') || n.starts_with('~') || n.starts_with('.'))
    {
        return refuse("with wildcard, regex or catch-all names");
    }
    let wanted: BTreeSet<&str> = plain.iter().map(|(a, _)| a.as_str()).collect();
    let target = ctx.doc.frontends.iter().position(|f| {
        let binds = f.items.iter().find_map(|i| match i {
            Item::Key {
                key,
                value: Value::Strs(list),
                ..
            } if key == "bind" => Some(list.iter().map(String::as_str).collect::<BTreeSet<_>>()),
            _ => None,
        });
        let has_tls = f
            .items
            .iter()
            .any(|i| matches!(i, Item::Key { key, .. } if key.starts_with("tls")));
        binds.as_ref() == Some(&wanted) && !has_tls
    });
    match target {
        Some(index) => Ok((index, names, names_node.origin.clone())),
        None => refuse("on other addresses than the first block's"),
    }
}

/// Adds a virtual host's routes to the first block's frontend, ahead of its
/// own (which take every other host), each asking for one of `hosts`.
pub(super) fn merge_virtual_host(
    target: &mut Section,
    block: Section,
    routes: Vec<Section>,
    hosts: &[String],
    names: &Origin,
) {
    let any = Value::Raw(format!(
        "[{}]",
        hosts
            .iter()
            .map(|h| format!("{{ host = {} }}", quote(h)))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let mut merged = Vec::new();
    for mut route in routes {
        for item in &mut route.items {
            if let Item::Key { key, .. } = item {
                if key == "any" {
                    *key = "all".to_string();
                }
            }
        }
        route.set("any", any.clone(), names);
        merged.push(route);
    }
    for item in block.items {
        match item {
            Item::Key { key, value, from, .. } if key == "default_backend" => {
                let origin = from.first().cloned().unwrap_or_else(|| names.clone());
                let mut route = Section::new("[[frontend.route]]", Some(origin.clone()));
                route.set("backend", value, &origin);
                route.set("any", any.clone(), names);
                merged.push(route);
            }
            Item::Key { key, .. } if key == "name" => {}
            Item::Key { key, value, from, .. } => {
                let same = target
                    .items
                    .iter()
                    .any(|i| matches!(i, Item::Key { key: k, value: v, .. } if *k == key && *v == value));
                if !same {
                    if let Some(origin) = from.first() {
                        target.not_translated(
                            origin,
                            &format!("`{key}` of the server block for {} differs from the first block's: tether's is per frontend", hosts.join(" ")),
                        );
                    }
                }
            }
            other => target.items.push(other),
        }
    }
    target.children.splice(0..0, merged);
}
