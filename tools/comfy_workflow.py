"""Convert between ComfyUI's two workflow formats, driven by a server's /object_info.

- ``api_to_ui``: an API-format prompt (what POST /prompt takes) -> the UI format the frontend loads and
  saves (nodes, links, widgets_values), laid out left to right by dependency depth. Used to build the
  example workflows in ``workflows/`` (see ``tools/build_workflows.py``).
- ``ui_to_api``: the reverse, as the frontend's graphToPrompt does it, for tests that queue the examples.
"""

from __future__ import annotations

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _specs(info: dict) -> tuple[list[str], dict]:
    order = info["input_order"].get("required", []) + info["input_order"].get("optional", [])
    return order, {**info["input"].get("required", {}), **info["input"].get("optional", {})}


def _is_widget(spec) -> bool:
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return not options.get("forceInput") and (isinstance(spec[0], list) or spec[0] in WIDGET_TYPES)


def _control_after_generate(spec) -> bool:
    return len(spec) > 1 and isinstance(spec[1], dict) and bool(spec[1].get("control_after_generate"))


def _depths(prompt: dict) -> dict[str, int]:
    depth: dict[str, int] = {}

    def visit(node_id: str) -> int:
        if node_id not in depth:
            parents = [v[0] for v in prompt[node_id]["inputs"].values() if isinstance(v, list)]
            depth[node_id] = 1 + max((visit(p) for p in parents), default=-1)
        return depth[node_id]

    for node_id in prompt:
        visit(node_id)
    return depth


def api_to_ui(prompt: dict, object_info: dict, titles: dict[str, str] | None = None) -> dict:
    depth = _depths(prompt)
    rows: dict[int, int] = {}
    nodes, links = [], []
    outputs: dict[tuple[str, int], list[int]] = {}
    for order, (node_id, node) in enumerate(sorted(prompt.items(), key=lambda kv: (depth[kv[0]], int(kv[0])))):
        info = object_info[node["class_type"]]
        names, specs = _specs(info)
        inputs, widgets = [], []
        for name in names:
            spec, value = specs[name], node["inputs"].get(name)
            if _is_widget(spec):
                linked = isinstance(value, list)
                default = spec[1].get("default") if len(spec) > 1 and isinstance(spec[1], dict) else None
                if default is None and isinstance(spec[0], list) and spec[0]:
                    default = spec[0][0]
                widgets.append(default if linked or value is None else value)
                if _control_after_generate(spec):
                    widgets.append("fixed")
                if linked:
                    inputs.append({"name": name, "type": "COMBO" if isinstance(spec[0], list) else spec[0],
                                   "widget": {"name": name}, "link": None, "_source": value})
            elif value is not None or name in info["input"].get("required", {}):
                inputs.append({"name": name, "type": spec[0], "link": None, "_source": value})
        for slot, entry in enumerate(inputs):
            source = entry.pop("_source")
            if isinstance(source, list):
                link_id = len(links) + 1
                source_type = object_info[prompt[source[0]]["class_type"]]["output"][source[1]]
                links.append([link_id, int(source[0]), source[1], int(node_id), slot, source_type])
                outputs.setdefault((source[0], source[1]), []).append(link_id)
                entry["link"] = link_id
        column = depth[node_id]
        row = rows.get(column, 0)
        rows[column] = row + 1
        nodes.append({
            "id": int(node_id), "type": node["class_type"], "pos": [40 + 340 * column, 40 + 260 * row],
            "size": [300, 120 + 26 * len(widgets)], "flags": {}, "order": order, "mode": 0,
            "inputs": inputs, "outputs": [], "properties": {"Node name for S&R": node["class_type"]},
            "widgets_values": widgets,
            **({"title": titles[node_id]} if titles and node_id in titles else {}),
        })
    for entry in nodes:
        info = object_info[entry["type"]]
        entry["outputs"] = [{"name": name, "type": kind, "slot_index": slot,
                             "links": outputs.get((str(entry["id"]), slot), [])}
                            for slot, (name, kind) in enumerate(zip(info["output_name"], info["output"]))]
    return {"last_node_id": max(n["id"] for n in nodes), "last_link_id": len(links), "nodes": nodes,
            "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    links = {link[0]: (link[1], link[2]) for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node.get("mode", 0) in (2, 4) or node["type"] in ("Note", "MarkdownNote"):
            continue
        info = object_info[node["type"]]
        names, specs = _specs(info)
        inputs = {i["name"]: [str(links[i["link"]][0]), links[i["link"]][1]]
                  for i in node.get("inputs", []) if i.get("link") is not None}
        values = iter(node.get("widgets_values", []))
        for name in names:
            if not _is_widget(specs[name]):
                continue
            value = next(values, None)
            if _control_after_generate(specs[name]):
                next(values, None)
            if name not in inputs:
                inputs[name] = value
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
