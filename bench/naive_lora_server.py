"""The obvious multi-adapter server: serve_bench.py's baseline.

One PEFT model with every adapter loaded; each request takes the model lock,
`set_adapter`s its adapter (or disables adapters for the base) and runs
`generate` alone. It speaks lorafleet's InferenceService.Generate over the
same gRPC framing, so the bench's clients call both servers alike; adapter
ids are the directory names given on the command line.

    python bench/naive_lora_server.py --port 50080 --model DIR --adapters A,B
"""

from __future__ import annotations

import argparse
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--adapters", default="", help="comma-separated dirs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorafleet.v1 import common_pb2, inference_pb2, inference_pb2_grpc

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    dirs = [Path(d) for d in args.adapters.split(",") if d]
    names = {}
    for i, path in enumerate(dirs):
        name = f"a{i}"
        if i == 0:
            model = PeftModel.from_pretrained(model, str(path), adapter_name=name)
        else:
            model.load_adapter(str(path), adapter_name=name)
        names[path.name] = name
    model.eval()
    lock = threading.Lock()
    # The end-of-text tokens the model's generation config and tokenizer name.
    eos = model.generation_config.eos_token_id
    eos = list(eos) if isinstance(eos, list) else [eos] if eos is not None else []
    if tok.eos_token_id is not None and tok.eos_token_id not in eos:
        eos.append(tok.eos_token_id)

    class Naive(inference_pb2_grpc.InferenceServiceServicer):
        def Generate(self, request, context):
            p = request.params
            messages = [{"role": "user", "content": p.prompt}]
            text = tok.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
            ids = tok(text, add_special_tokens=False)["input_ids"]
            started = time.perf_counter()
            with lock, torch.inference_mode():
                if request.adapter_id:
                    model.set_adapter(names[request.adapter_id])
                    model.base_model.enable_adapter_layers()
                elif names:
                    model.base_model.disable_adapter_layers()
                out = model.generate(
                    torch.tensor([ids]),
                    max_new_tokens=p.max_new_tokens,
                    do_sample=False,
                    eos_token_id=eos,
                    pad_token_id=tok.pad_token_id,
                )
            new = out[0, len(ids) :].tolist()
            return inference_pb2.InferenceServiceGenerateResponse(
                output=common_pb2.GenerationOutput(
                    text=tok.decode(new, skip_special_tokens=True),
                    prompt_tokens=len(ids),
                    completion_tokens=len(new),
                    latency_ms=(time.perf_counter() - started) * 1000.0,
                )
            )

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(Naive(), server)
    if not server.add_insecure_port(f"127.0.0.1:{args.port}"):
        raise SystemExit(f"cannot bind 127.0.0.1:{args.port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
