#!/usr/bin/env python3
"""Open the ComfyUI frontend in headless Chromium, load a UI-format workflow with app.loadGraphData,
optionally queue it, and save a PNG screenshot. Needs `apt-get install chromium`; uses aiohttp (in the venv).
usage: ui_screenshot.py workflow.json out.png [--server http://127.0.0.1:8199] [--queue] [--wait 8 (at most,
                        for the queue to empty)]
                        [--eval "JS expression printed after load"]"""
import argparse, asyncio, base64, json, shutil, subprocess, tempfile, time, urllib.request
import aiohttp


def queue_empty(server: str) -> bool:
    with urllib.request.urlopen(server + "/queue", timeout=30) as r:
        queue = json.load(r)
    return not queue["queue_running"] and not queue["queue_pending"]


def skip_first_run_templates(server: str) -> None:
    """A fresh ComfyUI user opens on the template browser, a dialog over the whole canvas: mark it seen."""
    request = urllib.request.Request(server + "/settings/Comfy.TutorialCompleted", b"true",
                                     {"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(request, timeout=30).close()


async def main(a):
    port = 9333
    prof = tempfile.mkdtemp()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("error: chromium not found. Fix: apt-get install -y chromium")
    proc = subprocess.Popen([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", f"--remote-debugging-port={port}",
                             f"--user-data-dir={prof}", f"--window-size={a.width},{a.height}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                tabs = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json"))
                ws_url = [t for t in tabs if t["type"] == "page"][0]["webSocketDebuggerUrl"]
                break
            except Exception:
                time.sleep(0.2)
        async with aiohttp.ClientSession() as s, s.ws_connect(ws_url, max_msg_size=0) as ws:
            n = 0
            async def cmd(method, **params):
                nonlocal n
                n += 1
                my = n
                await ws.send_json({"id": my, "method": method, "params": params})
                while True:
                    msg = json.loads((await ws.receive()).data)
                    if msg.get("id") == my:
                        return msg
            async def ev(expr):
                r = await cmd("Runtime.evaluate", expression=expr, awaitPromise=True, returnByValue=True)
                return r.get("result", {}).get("result", {}).get("value", r)
            await cmd("Page.enable")
            await cmd("Emulation.setDeviceMetricsOverride", width=a.width, height=a.height, deviceScaleFactor=1, mobile=False)
            skip_first_run_templates(a.server)
            await cmd("Page.navigate", url=a.server + "/")
            for _ in range(150):
                if await ev("!!(window.app && window.app.graph && window.app.canvas)"):
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(2)
            wf = json.load(open(a.workflow))
            print("load:", await ev(f"app.loadGraphData({json.dumps(wf)}).then(()=>'ok').catch(e=>'ERR '+e)"))
            await asyncio.sleep(1.5)
            if a.eval:
                print("eval:", await ev(a.eval))
            if a.queue:
                print("queue:", await ev("app.queuePrompt(0, 1).then(r=>JSON.stringify(r)).catch(e=>'ERR '+e)"))
                deadline = time.time() + a.wait   # until the queue is empty, --wait seconds at most
                await asyncio.sleep(1)
                while time.time() < deadline and not queue_empty(a.server):
                    await asyncio.sleep(0.5)
                print("queue empty:", queue_empty(a.server))
                await asyncio.sleep(1.5)          # the last results reach the page and are drawn
            if a.after:
                print("after:", await ev(a.after))
            shot = await cmd("Page.captureScreenshot", format="png")
            open(a.out, "wb").write(base64.b64decode(shot["result"]["data"]))
            print("wrote", a.out)
    finally:
        proc.terminate()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("workflow")
    ap.add_argument("out")
    ap.add_argument("--server", default="http://127.0.0.1:8199")
    ap.add_argument("--queue", action="store_true")
    ap.add_argument("--wait", type=float, default=8, help="with --queue: seconds at most to wait for the queue to empty")
    ap.add_argument("--eval")
    ap.add_argument("--after", help="JS expression printed after the run (with --queue)")
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--height", type=int, default=1000)
    asyncio.run(main(ap.parse_args()))
