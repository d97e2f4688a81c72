"""Doc-to-LoRA: a document becomes a LoRA adapter of the base model in one forward pass.

  variables = doc_to_lora.init(config, key)
  adapter = doc_to_lora.internalize(variables, base_params, text, config=config, tokenizer=tokenizer)

`config` (the published design, `Experimental` additions, presets), `modules` and `heads` (the Flax
modules), `experimental` (the additions' modules), `chunking` (documents into chunks: ours, or the
published chat-templated split), `generation` (activations -> adapters) and `sakana` (Sakana AI's
checkpoint format in and out; `hypernetworks.published` converts whole folders).
"""

from lora_hyper.hypernetworks import _common
from lora_hyper.hypernetworks.doc_to_lora.chunking import (
    Chunks,
    chunk_documents,
    chunk_width,
    pack_chunks,
    pad_chunks,
    split_document,
    stack_documents,
)
from lora_hyper.hypernetworks.doc_to_lora.config import (
    CONTEXT_ENCODERS,
    PRESETS,
    DocToLoraConfig,
    Experimental,
    d2l_compact,
    d2l_paper,
    d2l_small,
    d2l_tiny,
)
from lora_hyper.hypernetworks.doc_to_lora.experimental import STATS
from lora_hyper.hypernetworks.doc_to_lora.generation import (
    GeneratedAdapters,
    adapter_from_chunks,
    chunk_codes,
    chunk_gates,
    combine,
    document_adapters,
    encode_context,
    generate,
    internalize,
    internalize_chunk_ids,
    recompute_center,
)
from lora_hyper.hypernetworks.doc_to_lora.modules import DocToLora, boxed_variables

init, abstract_variables, variable_shapes, param_shapes, param_specs, num_params = (
    _common.variable_functions(boxed_variables))

__all__ = [
    "CONTEXT_ENCODERS", "Chunks", "DocToLora", "DocToLoraConfig", "Experimental", "GeneratedAdapters", "PRESETS",
    "STATS", "abstract_variables", "adapter_from_chunks", "chunk_codes", "chunk_documents", "chunk_gates",
    "chunk_width", "combine", "d2l_compact", "d2l_paper", "d2l_small", "d2l_tiny", "document_adapters",
    "encode_context", "generate", "init", "internalize", "internalize_chunk_ids", "num_params", "pack_chunks",
    "pad_chunks", "param_shapes", "param_specs", "recompute_center", "split_document", "stack_documents",
    "variable_shapes",
]
