"""Multi-task (FLAN-style) mixtures: the target data plus other tasks, sampled at configured rates."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from tunelab.config.schema import DataConfig, MixtureComponent, MixtureConfig
from tunelab.data.records import Example
from tunelab.data.sources import load_split
from tunelab.data.templates import Template, TemplateSet


@dataclass
class Component:
    name: str
    examples: list[Example]
    templates: TemplateSet


def mixture_rates(sizes: Sequence[int], cfg: MixtureConfig) -> list[float]:
    if cfg.strategy == "proportional":
        weights = [min(n, cfg.cap) for n in sizes]
    else:
        weights = [n ** (1.0 / cfg.temperature) for n in sizes]
    total = sum(weights)
    return [w / total for w in weights]


def _task_examples(comp: MixtureComponent) -> list[Example]:
    """A benchmark task's training documents (never its evaluation set) as instruction examples."""
    from tunelab.benchmarks import get_task
    from tunelab.benchmarks.loaders import training_documents
    from tunelab.benchmarks.prompts import answer_of, document_key

    spec = get_task(comp.task or "")  # MixtureComponent requires task or source
    return [
        Example(f"{spec.name}-train-{i}", document_key(spec, d), (answer_of(spec, d),))
        for i, d in enumerate(training_documents(spec))
    ]


def load_component(comp: MixtureComponent) -> Component:
    if comp.task is not None:
        examples = _task_examples(comp)
        templates = TemplateSet(comp.task, custom="{input}")
        name = f"task:{comp.task}"
    else:
        dcfg = DataConfig(
            source=comp.source,
            path=comp.path,
            files=comp.files,
            input_column=comp.input_column,
            target_columns=comp.target_columns,
        )
        examples = load_split(dcfg, comp.split)
        templates = TemplateSet(comp.template)
        name = f"{comp.source}:{comp.split}"
    if comp.max_examples:
        examples = examples[: comp.max_examples]
    return Component(name, examples, templates)


def sample_mixture(
    components: Sequence[Component], cfg: MixtureConfig, total: int, seed: int
) -> tuple[list[Example], list[Template], dict[str, dict[str, float]]]:
    """Draw `total` (example, template) pairs; each draw picks a component by rate, then its next example
    (shuffled, cycling when exhausted). Returns the pairs and the realised counts per component."""
    rng = random.Random(seed)
    rates = mixture_rates([len(c.examples) for c in components], cfg)
    orders = [rng.sample(range(len(c.examples)), len(c.examples)) for c in components]
    cursors = [0] * len(components)
    examples, templates, counts = [], [], [0] * len(components)
    for _ in range(total):
        k = rng.choices(range(len(components)), weights=rates)[0]
        comp = components[k]
        ex = comp.examples[orders[k][cursors[k] % len(comp.examples)]]
        cursors[k] += 1
        counts[k] += 1
        examples.append(ex)
        templates.append(rng.choice(comp.templates.train))
    stats = {
        c.name: {"rate": r, "drawn": n, "available": len(c.examples)} for c, r, n in zip(components, rates, counts)
    }
    return examples, templates, stats
