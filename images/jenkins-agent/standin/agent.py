"""A stand-in for Jenkins' agent.jar, for the test image only (Dockerfile JAVA=standin).

It takes agent.jar's command line (`-url URL -name NAME -secret SECRET -workDir DIR -noReconnect
[-webSocket]`) and plays its part against the Jenkins double (tests/doubles/jenkins.py): it
connects with the node's secret, runs the build Jenkins' queue assigns to its executor (prints
and sleeps for the item's duration), reports it done, and exits 0 once its node is deleted (the
real agent's channel closes then, and -noReconnect makes it exit). It keeps trying to connect
while the controller refuses it, as agent.jar does.
"""

import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


def say(msg):
    print(f"{time.strftime('%b %d, %Y %H:%M:%S')} stand-in agent: {msg}", flush=True)


def parse(argv):
    opts = {"-url": None, "-name": None, "-secret": None, "-workDir": None}
    flags = set()
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in opts and i + 1 < len(argv):
            opts[a] = argv[i + 1]
            i += 2
        else:
            flags.add(a)
            i += 1
    missing = [k for k in ("-url", "-name", "-secret") if not opts[k]]
    if missing:
        sys.exit(f"stand-in agent: missing {', '.join(missing)}")
    return opts, flags


def call(base, action, name, secret, method="GET"):
    query = urllib.parse.urlencode({"name": name, "secret": secret})
    url = f"{base.rstrip('/')}/buildfarm-test/agent/{action}"
    req = urllib.request.Request(f"{url}?{query}", data=b"" if method == "POST" else None, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def main():
    opts, flags = parse(sys.argv[1:])
    url, name, secret = opts["-url"], opts["-name"], opts["-secret"]
    say(f"Agent discovery successful; connecting to {url} as {name}"
        + (" (WebSocket)" if "-webSocket" in flags else ""))
    while True:  # agent.jar retries while the controller refuses the connection
        try:
            status, body = call(url, "connect", name, secret, "POST")
        except OSError as e:
            status, body = 0, {"error": str(e)}
        if status == 200 and body.get("state") == "connected":
            break
        if body.get("state") == "gone":
            say(f"node {name} no longer exists; exiting")
            return 1
        if status == 403:
            say(f"the controller rejected the secret: {body.get('error')}")
            return 1
        time.sleep(0.5)
    say("Connected")
    errors = 0
    while True:
        try:
            status, body = call(url, "poll", name, secret)
            errors = 0
        except OSError as e:
            errors += 1
            if errors > 20:
                say(f"lost the controller ({e}); -noReconnect: exiting")
                return 1
            time.sleep(0.5)
            continue
        state = body.get("state")
        if state == "gone":
            say("Terminated: the node was removed from the controller")
            return 0
        if state == "build":
            say(f"Building {body['job']} #{body['number']} (queue item {body['item']}) on {name}")
            time.sleep(float(body.get("duration") or 0))
            say(f"Finished {body['job']} #{body['number']}: SUCCESS")
            call(url, "done", name, secret, "POST")
            continue
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
