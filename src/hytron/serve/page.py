"""The chat page served at `/`: one self-contained HTML file (no CDN, no build step), streaming over fetch.

Model text is only ever inserted as `textContent` (never as HTML), so a reply cannot inject markup.
"""

CHAT_PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hytron chat</title>
<style>
  :root { --bg:#f7f7f8; --fg:#1d1d1f; --muted:#6b6b76; --accent:#76b900; --card:#fff; --line:#e3e3e8; }
  * { box-sizing: border-box; }
  body { margin:0; font:15px/1.5 system-ui, sans-serif; background:var(--bg); color:var(--fg);
         display:flex; flex-direction:column; height:100vh; }
  header { display:flex; gap:1rem; align-items:center; flex-wrap:wrap; padding:.6rem 1rem;
           background:var(--card); border-bottom:1px solid var(--line); }
  header h1 { font-size:1rem; margin:0 .5rem 0 0; }
  header label { color:var(--muted); font-size:.85rem; display:flex; gap:.35rem; align-items:center; }
  header input[type=number] { width:5.5rem; } header input[type=password] { width:9rem; }
  #log { flex:1; overflow-y:auto; padding:1rem; display:flex; flex-direction:column; gap:.8rem; }
  .msg { max-width:52rem; padding:.6rem .9rem; border-radius:.6rem; background:var(--card);
         border:1px solid var(--line); white-space:pre-wrap; word-wrap:break-word; }
  .user { align-self:flex-end; background:#eef6e0; }
  .assistant { align-self:flex-start; }
  details.thinking { color:var(--muted); font-size:.9rem; border-left:3px solid var(--line);
                     padding-left:.6rem; margin-bottom:.4rem; }
  details.thinking summary { cursor:pointer; }
  .meta { color:var(--muted); font-size:.75rem; margin-top:.3rem; }
  .error { color:#b00020; }
  .dropped { opacity:.6; }
  form { display:flex; gap:.5rem; padding:.8rem 1rem; background:var(--card); border-top:1px solid var(--line); }
  textarea { flex:1; resize:vertical; min-height:2.6rem; font:inherit; padding:.5rem; }
  button { font:inherit; padding:.4rem 1rem; border-radius:.4rem; border:1px solid var(--line); cursor:pointer; }
  button.primary { background:var(--accent); color:#fff; border-color:var(--accent); }
</style>
</head>
<body>
<header>
  <h1>hytron</h1>
  <span id="model" class="meta"></span>
  <label><input type="checkbox" id="thinking" checked> thinking</label>
  <label>budget <input type="number" id="budget" min="0" placeholder="none"></label>
  <label>temperature <input type="number" id="temperature" min="0" max="2" step="0.1" value="0.7"></label>
  <label>max tokens <input type="number" id="max_tokens" min="1" value="256"></label>
  <label>API key <input type="password" id="apikey" autocomplete="off"></label>
  <button type="button" id="clear">New chat</button>
</header>
<main id="log" aria-live="polite"></main>
<form id="form">
  <textarea id="input" placeholder="Message (Enter to send, Shift+Enter for a new line)"></textarea>
  <button type="submit" class="primary" id="send">Send</button>
  <button type="button" id="stop" disabled>Stop</button>
</form>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const history = [];
let controller = null;
$("apikey").value = localStorage.getItem("hytron-key") || "";
$("apikey").addEventListener("change", () => { localStorage.setItem("hytron-key", $("apikey").value); loadModel(); });

function headers() {
  const h = {"Content-Type": "application/json"};
  if ($("apikey").value) h["Authorization"] = "Bearer " + $("apikey").value;
  return h;
}

async function loadModel() {
  try {
    const r = await fetch("/v1/models", {headers: headers()});
    const j = await r.json();
    if (r.ok) $("model").textContent = j.data[0].id + " · context " + j.data[0].max_model_len;
    else $("model").textContent = j.error ? j.error.message : "";
  } catch (e) { $("model").textContent = String(e); }
}

function bubble(role) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  $("log").appendChild(div);
  return div;
}

function assistantBubble() {
  const div = bubble("assistant");
  div.dataset.state = "streaming";
  const think = document.createElement("details");
  think.className = "thinking"; think.open = true; think.hidden = true;
  const summary = document.createElement("summary"); summary.textContent = "Thinking";
  const reasoning = document.createElement("div"); reasoning.className = "reasoning";
  think.append(summary, reasoning);
  const content = document.createElement("div"); content.className = "content";
  const meta = document.createElement("div"); meta.className = "meta";
  div.append(think, content, meta);
  return {div, think, reasoning, content, meta};
}

// the "thinking" checkbox decides every turn: /think and /no_think typed in a message set the checkbox, and
// are taken out of what is sent (the template drops them anyway), so an earlier switch never overrides it
const SWITCH = /\/(no_)?think/g;  // matched as the template matches them

function takeSwitches(text) {
  const found = [...text.matchAll(SWITCH)];
  if (found.length) $("thinking").checked = !found[found.length - 1][1];
  return text;
}

function request(history) {
  const messages = history.map((m) => ({...m, content: m.content.replace(SWITCH, "").trim()}));
  const body = {messages, stream: true, stream_options: {include_usage: true},
                temperature: Number($("temperature").value || 0),
                max_tokens: Number($("max_tokens").value || 256),
                chat_template_kwargs: {enable_thinking: $("thinking").checked}};
  if ($("budget").value !== "") body.thinking_token_budget = Number($("budget").value);
  return body;
}

async function send(text) {
  takeSwitches(text);
  history.push({role: "user", content: text});
  const asked = bubble("user");
  asked.textContent = text;
  const a = assistantBubble();
  controller = new AbortController();
  $("send").disabled = true; $("stop").disabled = false;
  let finish = null, usage = null, answer = "", thought = "";
  const t0 = performance.now();
  try {
    const r = await fetch("/v1/chat/completions", {method: "POST", headers: headers(),
                          body: JSON.stringify(request(history)), signal: controller.signal});
    if (!r.ok) {
      const j = await r.json().catch(() => ({error: {message: r.statusText}}));
      throw new Error(j.error ? j.error.message : r.statusText);
    }
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buf += dec.decode(value, {stream: true});
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const event = buf.slice(0, cut); buf = buf.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") continue;
          const j = JSON.parse(data);
          if (j.error) throw new Error(j.error.message);
          if (j.usage) usage = j.usage;
          for (const c of j.choices || []) {
            const d = c.delta || {};
            if (d.reasoning) { thought += d.reasoning; a.reasoning.textContent = thought; a.think.hidden = false; }
            if (d.content) {
              if (!answer && thought) a.think.open = false;  // fold the thinking once the answer starts
              answer += d.content; a.content.textContent = answer;
            }
            if (c.finish_reason) finish = c.finish_reason;
          }
          $("log").scrollTop = $("log").scrollHeight;
        }
      }
    }
  } catch (e) {
    if (e.name === "AbortError") finish = "stopped";
    else { a.content.classList.add("error"); a.content.textContent = answer + (answer ? "\n" : "") + e.message;
           finish = "error"; }
  }
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  a.meta.textContent = (finish || "") + (usage ? ` · ${usage.completion_tokens} tokens` +
    (usage.completion_tokens_details ? ` (${usage.completion_tokens_details.reasoning_tokens} thinking)` : "") : "")
    + ` · ${secs}s`;
  a.div.dataset.state = "done"; a.div.dataset.finish = finish || "";
  if (finish === "error" || !answer) {
    // a failed or empty turn is not part of the conversation: the next request must not carry it
    history.pop();
    asked.classList.add("dropped"); a.div.classList.add("dropped");
    asked.title = a.div.title = "not sent with later messages";
  } else {
    history.push({role: "assistant", content: answer});
  }
  controller = null;
  $("send").disabled = false; $("stop").disabled = true;
}

$("form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("input").value.trim();
  if (!text || controller) return;
  $("input").value = "";
  send(text);
});
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("form").requestSubmit(); }
});
$("stop").addEventListener("click", () => controller && controller.abort());
$("clear").addEventListener("click", () => { history.length = 0; $("log").replaceChildren(); });
loadModel();
</script>
</body>
</html>
"""


def _inline_hash(tag: str) -> str:
    """CSP source for the page's one inline <tag> block: its SHA-256, so no other inline code can run."""
    import base64
    import hashlib

    body = CHAT_PAGE.split(f"<{tag}>", 1)[1].split(f"</{tag}>", 1)[0]
    return "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"


# Only the page's own script and style run, it talks to this origin only, and no other site may frame it
# (clickjacking) or have it sniffed as another type.
PAGE_HEADERS = {
    "Content-Security-Policy": f"default-src 'none'; script-src {_inline_hash('script')}; "
                               f"style-src {_inline_hash('style')}; connect-src 'self'; img-src 'self'; "
                               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
