"""Hostile chat templates (issue 26, items 2-3): every render stays within a budget and fails with one clear error.

Before: nested `range(100000)` loops hung at load, `range(10**10)`, a self-recursive macro or a recursive
`loop(...)` escaped as OverflowError/RecursionError tracebacks, and `'a'*10**10` or `tojson(indent=10**9)`
allocated without limit. Each hostile render runs in a child process with a memory cap and a timeout, so a
regression fails the test instead of hanging or swapping the machine.
"""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hytron.tokenizer import ChatTemplate, TemplateBudget, TemplateBudgetError, Tokenizer

ROOT = Path(__file__).resolve().parents[2]
HI = [{"role": "user", "content": "hi"}]
LOOP = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"

CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
from hytron.tokenizer.template import ChatTemplate
source, messages = json.loads(sys.stdin.read())
try:
    print(json.dumps(["ok", ChatTemplate(source).render(messages)[:200]]))
except Exception as e:
    print(json.dumps([type(e).__name__, str(e)[:300]]))
"""


def outcome(source: str, messages=HI, timeout: float = 30) -> tuple[str, str, float]:
    """(exception name or "ok" or "timeout", message or text, seconds) of rendering in a capped child."""
    t0 = time.monotonic()
    try:
        p = subprocess.run([sys.executable, "-c", CHILD], input=json.dumps([source, messages]), text=True,
                           capture_output=True, timeout=timeout, env={"PYTHONPATH": str(ROOT / "src")})
    except subprocess.TimeoutExpired:
        return "timeout", "", time.monotonic() - t0
    last = p.stdout.strip().splitlines()[-1:] or [json.dumps(["crash", p.stderr[-300:]])]
    kind, text = json.loads(last[0])
    return kind, text, time.monotonic() - t0


HOSTILE = {
    "nested range loops": LOOP,
    "range(10**10)": "{% for i in range(10**10) %}{{ i }}{% endfor %}",
    "self-recursive macro": "{% macro f(x) %}{{ f(x) }}{% endmacro %}{{ f(1) }}",
    "recursive loop(...)": "{% for m in messages recursive %}{{ loop(messages) }}{% endfor %}",
    "'a'*10**10": "{{ 'a' * 10**10 }}",
    "tojson(indent=10**9)": "{{ messages | tojson(indent=10**9) }}",
    "doubling with ~": "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
                       "{% endfor %}{{ ns.s }}",
    "doubling a list with +": "{% set ns = namespace(s=[1]) %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}"
                              "{% endfor %}{{ ns.s | length }}",
    "str.replace blow-up": "{% set ns = namespace(s='abc') %}{% for i in range(60) %}"
                           "{% set ns.s = ns.s.replace('a', ns.s) %}{% endfor %}{{ ns.s | length }}",
    "center(10**10)": "{{ 'x'.center(10**10) }}",
    "%-format width": "{{ '%0999999999d' % 1 }}",
    "str.format width": "{{ '{:>999999999}'.format(1) }}",
    "batch fill": "{{ [1] | batch(10**9, 0) | list }}",
    "indent width": "{{ 'a\nb' | indent(10**9) }}",
    "set-block doubling": "{% set ns = namespace(s='abc') %}{% for i in range(60) %}{% set ns.s %}{{ ns.s }}"
                          "{{ ns.s }}{% endset %}{% endfor %}{{ ns.s | length }}",
    "huge integer": "{% set ns = namespace(n=3) %}{% for i in range(40) %}{% set ns.n = ns.n * ns.n %}{% endfor %}"
                    "{{ ns.n }}",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_template_is_a_clean_refusal(name):
    kind, message, seconds = outcome(HOSTILE[name])
    assert kind in ("ValueError", "TemplateBudgetError"), f"{name}: {kind} {message}"
    assert message.startswith("chat template"), message
    assert seconds < 15, f"{name}: took {seconds:.1f}s"


def test_a_template_that_loops_on_a_trigger_word_only_fails_that_request():
    source = "{% if 'boom' in messages[-1]['content'] %}" + LOOP + "{% endif %}{{ messages[-1]['content'] }}"
    assert outcome(source)[:2] == ("ok", "hi")
    kind, message, seconds = outcome(source, [{"role": "user", "content": "boom"}])
    assert kind in ("ValueError", "TemplateBudgetError") and "steps" in message and seconds < 15


def test_budget_counts_steps_time_and_depth():
    template = ChatTemplate(LOOP)
    with pytest.raises(TemplateBudgetError, match="more than 1,000 steps"):
        template.render(HI, budget=TemplateBudget(max_steps=1000))
    t0 = time.monotonic()
    with pytest.raises(TemplateBudgetError, match="longer than 0.2 s"):
        template.render(HI, budget=TemplateBudget(seconds=0.2, max_steps=10**12))
    assert time.monotonic() - t0 < 2
    with pytest.raises(TemplateBudgetError, match="nest deeper than 5"):
        ChatTemplate("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").render(
            HI, budget=TemplateBudget(max_depth=5))
    with pytest.raises(TemplateBudgetError, match="output is longer than 100"):
        ChatTemplate("{% for i in range(1000) %}{{ i }}{% endfor %}").render(HI, budget=TemplateBudget(max_output=100))


def test_a_render_stops_soon_after_it_is_cancelled():
    cancel, result = threading.Event(), {}

    def render():
        try:
            ChatTemplate(LOOP).render(HI, budget=TemplateBudget(seconds=600, max_steps=10**12), cancel=cancel)
        except TemplateBudgetError as e:
            result["error"] = str(e)

    t = threading.Thread(target=render, daemon=True)
    t.start()
    time.sleep(0.2)
    cancel.set()
    t.join(2)
    assert not t.is_alive() and "cancelled" in result["error"]


def test_ordinary_templates_render_as_before():
    """Loops, macros, tojson with indent, string methods, set blocks: all within the budget, same text."""
    source = ("{% macro role(m) %}<{{ m['role'] | upper }}>{% endmacro %}"
              "{% for m in messages %}{{ role(m) }}{{ m['content'].strip().replace('a', 'A') ~ '|' }}"
              "{{ '%s!' % loop.index }}{{ '{}.'.format(m['role']) }}{% endfor %}"
              "{% set block %}{{ tools | tojson(indent=2) }}{% endset %}{{ block | length > 0 }}"
              "{{ [1, 2, 3] | join(',') }}{{ 'x' * 3 }}{{ [[1], [2]] | sum(start=[]) }}")
    chat = [{"role": "user", "content": " banana "}, {"role": "assistant", "content": "ok"}]
    text = ChatTemplate(source).render(chat, tools=[{"name": "f"}])
    assert text == "<USER>bAnAnA|1!user.<ASSISTANT>ok|2!assistant.True1,2,3xxx[1, 2]"


def test_a_template_variable_named_self_is_just_a_variable():
    assert ChatTemplate("{{ messages | length }}").render(HI, variables={"self": 1}) == "1"


def test_tokenizer_load_refuses_a_template_over_its_budget(tmp_path):
    """Loading renders a probe chat under the budget: a hanging template is one ValueError naming its file."""
    from tests.infer.chatmodel import train_tokenizer

    train_tokenizer().save(tmp_path)
    config_file = tmp_path / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "chat_template": LOOP}))
    code = (f"from hytron.tokenizer import Tokenizer\ntry:\n    Tokenizer.load({str(tmp_path)!r})\n"
            "except ValueError as e:\n    print('ValueError:', e)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={"PYTHONPATH": str(ROOT / "src")})
    said = p.stdout + p.stderr
    assert "ValueError:" in p.stdout and "tokenizer_config.json" in said and "steps" in said, said
    plain = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    config_file.write_text(json.dumps({**config, "chat_template": plain}))
    assert Tokenizer.load(tmp_path).render_text(HI) == "hi"
