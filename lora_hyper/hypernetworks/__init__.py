"""Hypernetworks that turn a document (Doc-to-LoRA) or a task description (Text-to-LoRA) into a
LoRA adapter for the base model (`lora_hyper.adapters.lora.LoraAdapter`). Their weights are Flax
variables, {"params": ...} (and Doc-to-LoRA's running statistics for some experimental options).

  variables = doc_to_lora.init(cfg, key);  adapter = internalize(variables, base_params, text, config=cfg, tokenizer=tok)
  variables = text_to_lora.init(cfg, key); adapter = generate_adapter(variables, desc, config=cfg, encoder=enc)

`kinds` holds one record per kind (presets, init, prompt format; `lora_hyper.pretrained` names the
shipped ones); `saved` reads and writes hypernetwork folders; `published` imports Sakana AI's published
Doc-to-LoRA checkpoint into one (and exports back).
"""

from lora_hyper.hypernetworks import doc_to_lora, kinds, perceiver, sentence_encoder, task_encoders, text_to_lora
from lora_hyper.hypernetworks.doc_to_lora import (
    DocToLoraConfig,
    Experimental,
    adapter_from_chunks,
    chunk_documents,
    d2l_paper,
    d2l_small,
    d2l_tiny,
    internalize,
)
from lora_hyper.hypernetworks.perceiver import PerceiverConfig
from lora_hyper.hypernetworks.sentence_encoder import SentenceEncoder, load_minilm
from lora_hyper.hypernetworks.task_encoders import BaseModelEncoder, TaskEncoder, make_task_encoder
from lora_hyper.hypernetworks.text_to_lora import (
    TextToLoraConfig,
    generate_adapter,
    t2l_l,
    t2l_m,
    t2l_s,
    t2l_small,
    t2l_tiny,
)

__all__ = [
    "BaseModelEncoder", "DocToLoraConfig", "Experimental", "PerceiverConfig", "SentenceEncoder", "TaskEncoder",
    "TextToLoraConfig", "adapter_from_chunks", "chunk_documents", "d2l_paper", "d2l_small", "d2l_tiny",
    "doc_to_lora", "generate_adapter", "internalize", "kinds", "load_minilm", "make_task_encoder", "perceiver",
    "sentence_encoder", "t2l_l", "t2l_m", "t2l_s", "t2l_small", "t2l_tiny", "task_encoders", "text_to_lora",
]
