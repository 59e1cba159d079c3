"""An HL7 v2 MLLP receiver for the e2e tests: hl7apy's MLLPServer (a real MLLP implementation
nobody here wrote). Each ORU^R01 is parsed with hl7apy in STRICT validation (v2.5.1
structure, segment and field definitions), written as ER7 to OUT_DIR/<n>.hl7 with the
validation outcome, and answered:

  --mode aa        AA (application accept)
  --mode ae        AE with an error text
  --mode silent    no ACK (the connection is held until the client gives up)

Prints "listening PORT" once ready.
"""
import argparse
import json
import os
import threading
import time

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.mllp import AbstractErrorHandler, AbstractHandler, MLLPServer
from hl7apy.parser import parse_message

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, default=0)
ap.add_argument("--mode", choices=["aa", "ae", "silent"], default="aa")
ap.add_argument("--out", required=True)
args = ap.parse_args()
lock = threading.Lock()
count = [0]


def walk(el):
    for c in el.children:
        if c.classname == "Segment":
            yield c
        else:
            yield from walk(c)


def ack(incoming, code, text=""):
    a = Message("ACK", version="2.5.1")
    a.msh.msh_3 = "HL7APY"
    a.msh.msh_5 = incoming.msh.msh_3.to_er7()
    a.msh.msh_9 = "ACK^R01^ACK"
    a.msh.msh_10 = "ACK" + incoming.msh.msh_10.to_er7()
    a.msh.msh_11 = "P"
    a.msa.msa_1 = code
    a.msa.msa_2 = incoming.msh.msh_10.to_er7()
    if text:
        a.msa.msa_3 = text
    return "\x0b" + a.to_er7() + "\x1c\x0d"


class OruHandler(AbstractHandler):
    def reply(self):
        raw = self.incoming_message
        record = {"er7": raw.replace("\r", "\n")}
        try:
            msg = parse_message(raw, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
            msg.validate()
            record["valid"] = True
        except Exception as e:  # the test asserts on this
            msg = parse_message(raw, find_groups=True)
            record["valid"] = False
            record["error"] = repr(e)
        # The segments as hl7apy's parser grouped them (ORU_R01 groups), in order, with the
        # group each sits in.
        record["segments"] = [[s.parent.name, s.to_er7()] for s in walk(msg)]
        with lock:
            count[0] += 1
            n = count[0]
        with open(os.path.join(args.out, "%04d.json" % n), "w") as f:
            json.dump(record, f)
        if args.mode == "silent":
            time.sleep(30)
            raise RuntimeError("no ACK on purpose")
        if args.mode == "ae":
            return ack(msg, "AE", "Unknown patient on purpose")
        return ack(msg, "AA")


class ErrHandler(AbstractErrorHandler):
    def reply(self):
        raise self.exc


server = MLLPServer("127.0.0.1", args.port, {"ORU^R01^ORU_R01": (OruHandler,), "ERR": (ErrHandler,)})
print("listening %d" % server.server_address[1], flush=True)
server.serve_forever()
