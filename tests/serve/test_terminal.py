"""`hytron chat MODEL_DIR` in a real subprocess: streams thinking then answer, /budget and /no_think work."""

import re
import subprocess
import sys


def test_terminal_chat(model_dir):
    script = "What is 6 times 7?\n/budget 4\nAnd 2 plus 2?\n/no_think\nHello\n/reset\n/quit\n"
    out = subprocess.run([sys.executable, "-m", "hytron", "chat", str(model_dir), "--temperature", "0",
                          "--max-tokens", "16", "--threads", "1", "--max-model-len", "512"],
                         input=script, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith("hytron chat · tiny-chat · thinking on")
    turns = [(int(a), int(b)) for a, b in re.findall(r"\[\w+ · (\d+) tokens, (\d+) thinking\]", text)]
    assert len(turns) == 3
    assert turns[0][1] > 0 and "thinking: " in text  # thinking on by default, shown before the answer
    assert 4 < turns[1][1] <= 4 + 1 + 1 + 1  # budget 4, grace 1, a forced "\n" if mid-line, then </think>
    assert turns[2][1] == 0  # /no_think
    assert "[thinking budget 4]" in text and "[thinking off]" in text and "[new conversation]" in text
