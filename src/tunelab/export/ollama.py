"""An Ollama `Modelfile` that gives the exported model exactly the prompt tunelab trained and evaluated it on.

The TEMPLATE is the run's evaluation prompt (instruction phrasing, and the chat template with its default
system turn when the model has one) rendered around a marker that becomes Ollama's `{{ .Prompt }}`: the user
sends the raw input (a dialogue) and the model sees what it saw in tunelab.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from tunelab.errors import ExportError

INPUT_MARKER = "\x00TUNELAB_INPUT\x00"


def _go_literal(text: str) -> str:
    """Template text as Go's text/template reads it: literal `{{` must be written as an action."""
    return text.replace("{{", '{{ "{{" }}')


def ollama_template(rendered_prompt: str) -> str:
    """Ollama TEMPLATE for a prompt rendered around `INPUT_MARKER`."""
    if rendered_prompt.count(INPUT_MARKER) != 1:
        raise ExportError(
            "the task template does not place the input exactly once; it cannot become an Ollama TEMPLATE"
        )
    before, after = rendered_prompt.split(INPUT_MARKER)
    template = f"{_go_literal(before)}{{{{ .Prompt }}}}{_go_literal(after)}"
    if '"""' in template:
        raise ExportError('the prompt contains """, which an Ollama Modelfile cannot quote')
    return template


def modelfile(
    model_file: str,
    template: str,
    stops: Sequence[str],
    max_new_tokens: int,
    context: int,
    adapter_file: str | None = None,
) -> str:
    lines = [f"FROM ./{model_file}"]
    if adapter_file:
        lines.append(f"ADAPTER ./{adapter_file}")
    lines.append(f'TEMPLATE """{template}"""')
    lines += [f"PARAMETER stop {json.dumps(s)}" for s in stops]
    # greedy decoding and the generation budget tunelab evaluated with
    lines += [
        "PARAMETER temperature 0",
        "PARAMETER top_k 1",
        f"PARAMETER num_predict {max_new_tokens}",
        f"PARAMETER num_ctx {context}",
    ]
    return "\n".join(lines) + "\n"
