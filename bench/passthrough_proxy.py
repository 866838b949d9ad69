"""The least a Python gRPC hop costs: a pass-through proxy with no code.

rollout_bench.py's reference for the gateway's router overhead. It forwards
every unary call's bytes to one upstream unparsed: no protobuf decoding, no
tracing, no error mapping, no routing; the grpcio sync server and client a
hand-written Python router would be built on, and nothing else.

    python bench/passthrough_proxy.py --port 50070 --upstream 127.0.0.1:50054
"""

from __future__ import annotations

import argparse
from concurrent import futures

import grpc


class PassThrough(grpc.GenericRpcHandler):
    def __init__(self, channel: grpc.Channel, timeout_s: float) -> None:
        self._channel = channel
        self._timeout = timeout_s

    def service(self, handler_call_details):
        forward = self._channel.unary_unary(handler_call_details.method)

        def call(request: bytes, context: grpc.ServicerContext) -> bytes:
            try:
                return forward(request, timeout=self._timeout)
            except grpc.RpcError as exc:
                context.abort(exc.code(), exc.details() or "")

        return grpc.unary_unary_rpc_method_handler(call)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="host:port")
    parser.add_argument("--timeout-s", type=float, default=60.0)
    args = parser.parse_args()
    channel = grpc.insecure_channel(args.upstream)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((PassThrough(channel, args.timeout_s),))
    if not server.add_insecure_port(f"127.0.0.1:{args.port}"):
        raise SystemExit(f"cannot bind 127.0.0.1:{args.port}")
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
