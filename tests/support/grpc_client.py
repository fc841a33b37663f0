"""A gRPC client in Python (grpcio, grpcio-health-checking), for tests/grpc_interop.rs.

It calls the greeter and its grpc.health.v1.Health service as clients written in other
languages (and the kubelet's gRPC probe) do. The helloworld stubs are generated at test
time from examples/greeter/proto/helloworld.proto and found on PYTHONPATH.

Subcommands (each line printed is flushed at once):

  check ADDR SERVICE   Health.Check: the status name (SERVING, NOT_SERVING, ...), or
                       `ERROR <code> <details>` and exit status 1
  watch ADDR SERVICE   Health.Watch: each status name as it arrives, then `END <code>`
                       once the server ends the stream
  hello ADDR NAME      Greeter.SayHello: the reply's message, or `ERROR <code> <details>`
  stream ADDR NAME     Greeter.SayHelloStreamReply: each reply's message, then `END <code>`
  load ADDR CLIENTS PROPAGATION_MS
                       CLIENTS threads, each with its own channel, call SayHello in a loop;
                       `CALLING` once every client has been answered. After a `SIGTERM`
                       line on stdin (the test has signalled the service) each client also
                       asks Health.Check("") between calls, as a health-checking balancer,
                       and stops PROPAGATION_MS after it first sees NOT_SERVING. Then
                       `DONE <ok before> <ok after> <failed>`, and one `FAIL ...` line per
                       failed call; exit status 1 if any failed
  session ADDR         Commands read from stdin, one a line (`check SERVICE`,
                       `hello NAME`), each on a new channel (a new connection, as a
                       probe makes), one answer line each: the cost of starting Python
                       is paid once, before the moment under test.

A status name or message is printed bare; `END` and `ERROR` lines carry the gRPC status
code's name (OK, NOT_FOUND, UNAVAILABLE, ...).
"""

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import helloworld_pb2
import helloworld_pb2_grpc

# A safety net for calls that should take milliseconds; nothing is paced by it.
UNARY_TIMEOUT = 20.0
# Streams last as long as the server keeps them open; the test bounds its own wait.
STREAM_TIMEOUT = 120.0

# The service is on 127.0.0.1: never through an HTTP proxy set in the environment.
CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]


def say(line):
    print(line, flush=True)


def channel(addr):
    return grpc.insecure_channel(addr, options=CHANNEL_OPTIONS)


def error_line(error):
    details = (error.details() or "").replace("\n", " ")
    return f"ERROR {error.code().name} {details}"


def status_name(status):
    return health_pb2.HealthCheckResponse.ServingStatus.Name(status)


def check(addr, service):
    with channel(addr) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        try:
            response = stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=UNARY_TIMEOUT
            )
        except grpc.RpcError as error:
            say(error_line(error))
            return 1
        say(status_name(response.status))
        return 0


def hello(addr, name):
    with channel(addr) as ch:
        stub = helloworld_pb2_grpc.GreeterStub(ch)
        try:
            reply = stub.SayHello(
                helloworld_pb2.HelloRequest(name=name), timeout=UNARY_TIMEOUT
            )
        except grpc.RpcError as error:
            say(error_line(error))
            return 1
        say(reply.message)
        return 0


def stream_to_end(call, show):
    """Print each item of a server stream, then `END <code>`; 0 when the code is OK."""
    try:
        for item in call:
            say(show(item))
    except grpc.RpcError as error:
        details = (error.details() or "").replace("\n", " ")
        say(f"END {error.code().name} {details}".rstrip())
        return 1
    say(f"END {call.code().name}")
    return 0


def watch(addr, service):
    with channel(addr) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        call = stub.Watch(
            health_pb2.HealthCheckRequest(service=service), timeout=STREAM_TIMEOUT
        )
        return stream_to_end(call, lambda r: status_name(r.status))


def stream(addr, name):
    with channel(addr) as ch:
        stub = helloworld_pb2_grpc.GreeterStub(ch)
        call = stub.SayHelloStreamReply(
            helloworld_pb2.HelloRequest(name=name), timeout=STREAM_TIMEOUT
        )
        return stream_to_end(call, lambda r: r.message)


def session(addr):
    say("READY")
    for line in sys.stdin:
        command, _, argument = line.rstrip("\n").partition(" ")
        if command == "check":
            check(addr, argument)
        elif command == "hello":
            hello(addr, argument)
        elif command == "":
            continue
        else:
            say(f"ERROR UNKNOWN_COMMAND {command}")
    return 0


def load(addr, clients, propagation_ms):
    import threading
    import time

    clients = int(clients)
    propagation = int(propagation_ms) / 1000.0
    lock = threading.Lock()
    counts = {"before": 0, "after": 0}
    failures = []
    answered = threading.Barrier(clients + 1)
    signalled = threading.Event()

    def client(number):
        told = False
        not_serving_at = None
        with channel(addr) as ch:
            greeter = helloworld_pb2_grpc.GreeterStub(ch)
            health = health_pb2_grpc.HealthStub(ch)
            while True:
                after = signalled.is_set()
                try:
                    greeter.SayHello(
                        helloworld_pb2.HelloRequest(name="load"), timeout=UNARY_TIMEOUT
                    )
                    with lock:
                        counts["after" if after else "before"] += 1
                except grpc.RpcError as error:
                    with lock:
                        failures.append(f"client {number} SayHello: {error_line(error)}")
                if not told:
                    told = True
                    answered.wait()
                if not_serving_at is not None:
                    if time.monotonic() - not_serving_at >= propagation:
                        return
                elif after:
                    try:
                        response = health.Check(
                            health_pb2.HealthCheckRequest(service=""),
                            timeout=UNARY_TIMEOUT,
                        )
                        if response.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                            not_serving_at = time.monotonic()
                    except grpc.RpcError as error:
                        with lock:
                            failures.append(f"client {number} Check: {error_line(error)}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    answered.wait()
    say("CALLING")
    for line in sys.stdin:
        if line.strip() == "SIGTERM":
            signalled.set()
            break
    for thread in threads:
        thread.join()
    say(f"DONE {counts['before']} {counts['after']} {len(failures)}")
    for failure in failures:
        say(f"FAIL {failure}")
    return 1 if failures else 0


COMMANDS = {
    "check": check,
    "watch": watch,
    "hello": hello,
    "stream": stream,
}


def main(argv):
    if len(argv) == 2 and argv[0] == "session":
        return session(argv[1])
    if len(argv) == 4 and argv[0] == "load":
        return load(argv[1], argv[2], argv[3])
    if len(argv) == 3 and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1], argv[2])
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
