"""A task document's prompt, answer choices, gold label and references, as its spec defines them."""

from __future__ import annotations

from typing import Any

from tunelab.benchmarks.spec import TaskSpec
from tunelab.errors import DataError

Doc = dict[str, Any]


def render(template: str, doc: Doc) -> str:
    try:
        return template.format(**doc)
    except KeyError as e:
        raise DataError(f"prompt field {e} not in the task's documents (fields: {', '.join(doc)})") from None


def label_of(spec: TaskSpec, doc: Doc) -> int:
    raw = doc[spec.label_key]
    if spec.label_map is not None:
        key = str(raw)
        if key not in spec.label_map:
            raise DataError(f"task {spec.name}: label {raw!r} not in label_map {spec.label_map}")
        return spec.label_map[key]
    return int(raw)


def choices_of(spec: TaskSpec, doc: Doc) -> list[str]:
    if spec.choice_fields:
        return [spec.choice_prefix + str(doc[f]) for f in spec.choice_fields]
    return list(spec.choices or [])


def references_of(spec: TaskSpec, doc: Doc) -> list[str]:
    if spec.loader == "parallel":
        return list(doc["references"])
    return [str(doc[f]).strip() for f in spec.reference_fields or []]


def answer_of(spec: TaskSpec, doc: Doc) -> str:
    """The document's gold answer as text (the right choice, or the first reference)."""
    if spec.kind == "multiple_choice":
        return choices_of(spec, doc)[label_of(spec, doc)].strip()
    return references_of(spec, doc)[0].strip()


def document_key(spec: TaskSpec, doc: Doc) -> str:
    """What identifies a document as training data: its rendered prompt."""
    return render(spec.prompt, doc).strip()


def document_texts(spec: TaskSpec, doc: Doc) -> set[str]:
    """Texts whose presence among training inputs means the document was trained on: its rendered prompt,
    and each of its longer string fields (a dialogue trained on as another task's input)."""
    return {document_key(spec, doc)} | {v.strip() for v in doc.values() if isinstance(v, str) and len(v.strip()) >= 20}
