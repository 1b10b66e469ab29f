from tunelab.data.collate import LengthGroupedBatches, TrainCollator, generation_batch
from tunelab.data.encoding import IGNORE_INDEX, Encoded, PromptEncoder, TruncationStats
from tunelab.data.readers import read_records
from tunelab.data.records import Example, rows_to_examples
from tunelab.data.sources import BUILTIN_DATASETS, load_split
from tunelab.data.templates import TEMPLATES, Template, TemplateSet, register_templates

__all__ = [
    "BUILTIN_DATASETS", "IGNORE_INDEX", "TEMPLATES", "Encoded", "Example", "LengthGroupedBatches", "PromptEncoder",
    "Template", "TemplateSet", "TrainCollator", "TruncationStats", "generation_batch", "load_split", "read_records",
    "register_templates", "rows_to_examples",
]
