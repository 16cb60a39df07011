"""gridsync-ffi from Python: two device stores enrolled in place record
issues offline, sync through a real server this test starts, converge, see
a status conflict, have an out-of-scope write refused and get error codes;
a council meeting travels as typed records; a live query follows a write on
another thread and a sync; a sync runs as an asyncio coroutine.

Run by ffi/test-bindings after ffi/generate (needs the server binary and
the generated module on PYTHONPATH, and the library next to it)."""

import asyncio
import json
import os
import queue
import threading
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

import gridsync_ffi as g

SERVER = os.environ["GRIDSYNC_SERVER_BIN"]
ADMIN = "python-binding-test-admin"
# A self-signed certificate for 127.0.0.1 that ffi/test-bindings makes:
# the server serves HTTPS with it, and the test trusts it (the library by
# pinning it, urllib by a context that knows it).
CERT = os.environ["GRIDSYNC_TEST_TLS_CERT"]
KEY = os.environ["GRIDSYNC_TEST_TLS_KEY"]
TLS = ssl.create_default_context(cafile=CERT)


def post(url, body, token):
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(req, context=TLS) as r:
            text = r.read().decode()
            return r.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode() or "null")


def start_server(data):
    env = dict(os.environ, GRIDSYNC_ADMIN_TOKEN=ADMIN, RUST_LOG="warn")
    proc = subprocess.Popen(
        [SERVER, "serve", "--listen", "127.0.0.1:0", "--data-dir", data,
         "--tls-cert", CERT, "--tls-key", KEY],
        stdout=subprocess.PIPE, env=env, text=True,
    )
    # The banner comes once the data is open, after a "listening" line.
    banner = proc.stdout.readline()
    while banner and not banner.startswith("gridsync serving on "):
        banner = proc.stdout.readline()
    assert "https://" in banner, banner
    url = "https://" + banner.split("https://")[1].split()[0]
    return proc, url


def author(user):
    return g.AuthorRecord(user=user, role="grid_worker")


def new_issue(title, grid):
    return g.NewIssueRecord(
        title=title, kind="complaint", category="facilities.lighting", urgency="yellow",
        source="grid_patrol", external_ref=None, original_statement="楼道灯坏了",
        description="居民反映楼道照明损坏", report=True,
        reporter=g.ReporterRecord(name="张女士", phone="13800000000", anonymous=False, may_call_back=True),
        street="S1", community="C1", grid=grid, building="3号楼", address="幸福路 12 号",
    )


class Changes(g.ChangeListener):
    def __init__(self):
        self.ids = []

    def on_change(self, ids):
        self.ids.extend(ids)


class Progress(g.ProgressListener):
    def __init__(self):
        self.rounds = 0

    def on_progress(self, progress):
        self.rounds = progress.rounds


class FileProgress(g.ProgressListener):
    def __init__(self):
        self.chunks_sent = 0
        self.received = 0
        self.total = 0

    def on_progress(self, progress):
        self.chunks_sent = max(self.chunks_sent, progress.file_chunks_sent)
        if progress.file_chunks_total:
            self.received, self.total = progress.file_chunks_received, progress.file_chunks_total


class Pages(g.LiveQueryListener):
    def __init__(self):
        self.pages = queue.Queue()

    def on_result(self, page):
        self.pages.put(page)

    def next(self, timeout=10):
        return self.pages.get(timeout=timeout)


def get(url, token):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, context=TLS) as r:
            return r.status, json.loads(r.read().decode())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode() or "null")


def main():
    tmp = tempfile.mkdtemp()
    proc, url = start_server(os.path.join(tmp, "server"))
    try:
        for path, body in [
            ("/v1/admin/streets", {"id": "S1"}),
            ("/v1/admin/communities", {"id": "C1", "street": "S1"}),
            ("/v1/admin/grids", {"id": "G1", "community": "C1"}),
            ("/v1/admin/grids", {"id": "G2", "community": "C1"}),
            ("/v1/admin/workers", {"id": "w1", "grids": ["G1"]}),
            ("/v1/admin/workers", {"id": "clerk", "communities": ["C1"]}),
        ]:
            status, answer = post(url + path, body, ADMIN)
            assert status < 300, (path, status, answer)

        # The library trusts the usual web roots, which do not know a
        # self-signed certificate: enrolling fails until it is pinned.
        # A phone opened with the district's deadline table: a red case
        # gets the table's hour, not the national two; a bad table is a
        # clear error.
        timed = g.GridStore.open_with_deadlines(
            os.path.join(tmp, "timed"), "T1",
            '{"urgency_hours": {"red": 1, "yellow": 12, "blue": 48}}')
        red = new_issue("电动车楼道充电", "G1")
        red.urgency = "red"
        before = int(time.time() * 1000)
        rid = timed.create_issue(author("w1"), red)
        due = timed.issue(rid).effective_deadline
        assert before + 3_600_000 - 60_000 <= due <= int(time.time() * 1000) + 3_600_000, due
        try:
            g.GridStore.open_with_deadlines(os.path.join(tmp, "bad"), "T2", '{"urgency_hours": {}}')
            raise AssertionError("a bad table was accepted")
        except g.GridsyncError.Failed as e:
            assert e.code == "invalid_input", e.code
        # Encrypted at rest: opened with a key, refused with none, with the
        # wrong one or a short one (nothing touched), then rotated.
        key = g.generate_store_key()
        assert len(key) == 32 and key != g.generate_store_key()
        sealed_dir = os.path.join(tmp, "sealed")
        sealed = g.GridStore.open_with(sealed_dir, g.StoreOptions(device_code="K1", key=key))
        sid = sealed.create_issue(author("w1"), new_issue("加密的记录", "G1"))
        del sealed
        for options, code in [
            (g.StoreOptions(device_code="K1"), "wrong_key"),
            (g.StoreOptions(device_code="K1", key=bytes(32)), "wrong_key"),
            (g.StoreOptions(device_code="K1", key=key[:16]), "invalid_input"),
        ]:
            try:
                g.GridStore.open_with(sealed_dir, options)
                raise AssertionError(f"opened with {options.key!r}")
            except g.GridsyncError.Failed as e:
                assert e.code == code, (e.code, e.reason)
        new_key = g.generate_store_key()
        rotated = g.GridStore.open_with(
            sealed_dir, g.StoreOptions(device_code="K1", key=new_key, previous_key=key))
        assert rotated.issue(sid).title == "加密的记录"
        del rotated
        try:
            g.GridStore.open_with(sealed_dir, g.StoreOptions(device_code="K1", key=key))
            raise AssertionError("the old key still opens the store")
        except g.GridsyncError.Failed as e:
            assert e.code == "wrong_key", e.code
        assert g.GridStore.open_with(
            sealed_dir, g.StoreOptions(device_code="K1", key=new_key)).issue(sid).title == "加密的记录"

        probe = g.GridStore.open(os.path.join(tmp, "probe"), "")
        _, code = post(url + "/v1/admin/enrollments", {"worker": "w1"}, ADMIN)
        try:
            probe.enroll(url, code["code"])
            raise AssertionError("enrolled with an untrusted certificate")
        except g.GridsyncError.Failed as e:
            assert e.code == "transport", (e.code, e.reason)
        with open(CERT) as f:
            g.pin_certificate(f.read())

        try:
            probe.create_issue(author("w1"), new_issue("未登记", "G1"))
            raise AssertionError("recorded before enrollment")
        except g.GridsyncError.Failed as e:
            assert e.code == "not_enrolled", e.code

        def device(name):
            # Enrolled in place: the store takes the code the server gives.
            store = g.GridStore.open(os.path.join(tmp, name), "")
            assert store.device_code() == "" and not store.is_enrolled()
            _, code = post(url + "/v1/admin/enrollments", {"worker": "w1"}, ADMIN)
            enrolled = store.enroll(url, code["code"])
            assert store.device_code() == enrolled.device_code and store.is_enrolled()
            _, again = post(url + "/v1/admin/enrollments", {"worker": "w1"}, ADMIN)
            try:
                store.enroll(url, again["code"])
                raise AssertionError("enrolled twice")
            except g.GridsyncError.Failed as e:
                assert e.code == "already_enrolled", e.code
            return store, enrolled.token

        a, token_a = device("a")
        b, token_b = device("b")
        assert a.device_code() != b.device_code()

        # Offline work on both.
        ia = a.create_issue(author("w1"), new_issue("楼道灯不亮", "G1"))
        ib = b.create_issue(author("w1"), new_issue("垃圾清运不及时", "G1"))
        outside = a.create_issue(author("w1"), new_issue("别的网格", "G2"))
        a.update_issue(ia, author("w1"), g.IssueOperation.ADD_NOTE(text="已上门核实"))
        # More time asked from the phone: flagged until the office answers.
        assert not a.issue(ia).extension_requested
        three_days = int(time.time() * 1000) + 3 * 24 * 3600 * 1000
        a.update_issue(ia, author("w1"), g.IssueOperation.REQUEST_EXTENSION(due=three_days, reason="需协调物业"))
        assert a.issue(ia).extension_requested
        changes = Changes()
        b.add_change_listener(changes)

        progress = Progress()
        report = a.sync(url, token_a, progress)
        assert progress.rounds >= 1
        refused = {r.id: r.code for r in report.refused}
        assert refused == {outside: "out_of_scope"}, refused
        b.sync(url, token_b, None)
        a.sync(url, token_a, None)
        assert ia in changes.ids, changes.ids
        # Convergence: the same records and views on both (the refused one
        # stays on a, pending).
        ids_a = {s.id for s in a.list(g.ListQuery(kind="issue", grid="G1", status=None, open=None,
                                                 overdue=None, conflict=None, sort=None, offset=0, limit=0)).items}
        ids_b = {s.id for s in b.list(g.ListQuery(kind="issue", grid=None, status=None, open=None,
                                                 overdue=None, conflict=None, sort=None, offset=0, limit=0)).items}
        assert ids_a == ids_b == {ia, ib}, (ids_a, ids_b)
        assert a.issue(ia) == b.issue(ia)
        assert b.issue(ia).timeline[0].text == "已上门核实"
        assert a.pending_count() == 1  # the refused record

        # Accepting is the office's: the phone refuses it before writing,
        # and the office does it through its API.
        try:
            a.update_issue(ia, author("w1"), g.IssueOperation.TRANSITION(to="accepted", reason=""))
            raise AssertionError("a grid worker accepted a case")
        except g.GridsyncError.Failed as e:
            assert e.code == "forbidden", e.code
        _, office = post(url + "/v1/admin/office-users", {"worker": "clerk", "role": "community"}, ADMIN)
        for to in ["accepted", "dispatched"]:
            status, answer = post(url + f"/v1/office/issues/{ia}/ops",
                                  {"op": "transition", "args": {"to": to, "reason": ""}}, office["token"])
            assert status == 200, (status, answer)

        # A status conflict: a and b move the same case differently offline.
        a.sync(url, token_a, None)
        b.sync(url, token_b, None)
        a.update_issue(ia, author("w1"), g.IssueOperation.TRANSITION(to="signed_for", reason=""))
        b.update_issue(ia, author("w1"), g.IssueOperation.TRANSITION(to="returned", reason="不属本网格"))
        a.sync(url, token_a, None)
        b.sync(url, token_b, None)
        a.sync(url, token_a, None)
        va, vb = a.issue(ia), b.issue(ia)
        assert va.status_candidates == vb.status_candidates == ["returned", "signed_for"], va.status_candidates
        assert va == vb
        b.update_issue(ia, author("w1"), g.IssueOperation.RESOLVE_STATUS_CONFLICT(to="signed_for", reason="核实"))
        b.sync(url, token_b, None)
        a.sync(url, token_a, None)
        assert a.issue(ia).status == "signed_for" and a.issue(ia).status_candidates == []

        # A photo taken offline on a reaches b byte for byte (and the
        # server, where the office finds it), resumable and verified.
        photo_bytes = bytes((i * 7919) % 251 for i in range(600_000))
        photo_path = os.path.join(tmp, "photo.jpg")
        with open(photo_path, "wb") as f:
            f.write(photo_bytes)
        att = a.attach_file(g.AttachTarget.ISSUE(id=ia), author("w1"), photo_path, "image/jpeg", "楼道堆物")
        assert att.size == len(photo_bytes) and att.state == "unsent", att
        sent = FileProgress()
        a.sync(url, token_a, sent)
        assert sent.chunks_sent == 3, sent.chunks_sent
        assert a.issue(ia).attachments[0].state == "here"
        b.sync(url, token_b, None)
        seen = b.issue(ia).attachments[0]
        assert (seen.hash, seen.state, seen.local_path) == (att.hash, "missing", None), seen
        got = FileProgress()
        path = b.fetch_file(url, token_b, seen.hash, seen.size, got)
        with open(path, "rb") as f:
            assert f.read() == photo_bytes
        assert (got.received, got.total) == (3, 3), (got.received, got.total)
        assert b.issue(ia).attachments[0].local_path == path
        assert b.prefetch_files(url, token_b, 10**9) == 0  # nothing left to fetch
        on_server = os.path.join(tmp, "server", "store", "files", att.hash[:2], att.hash)
        with open(on_server, "rb") as f:
            assert f.read() == photo_bytes
        status, case = get(url + f"/v1/office/issues/{ia}", office["token"])
        assert status == 200 and case["attachments"][0]["file"]["hash"] == att.hash, (status, case)

        # A council meeting as typed records, the same on b after a sync.
        m = a.create_meeting(author("w1"), g.NewMeetingRecord(
            topic="楼道堆物议事", level="grid", format="in_person", venue="幸福社区议事厅",
            group_ref="", convener="w1", scheduled_at=three_days, street="S1", community="C1",
            grid="G1", building="3号楼", address="幸福路 12 号", agenda="清理楼道杂物", issue_ids=[ia]))
        a.update_meeting(m, author("w1"), g.MeetingOperation.ADD_ATTENDEE(attendee=g.NewAttendeeRecord(
            role="requester", organisation="3号楼", name="张女士", contact="13800000000",
            attended=True, online=False)))
        a.update_meeting(m, author("w1"), g.MeetingOperation.ADD_AGREEMENT(text="物业七日内清理"))
        item = g.new_record_id()
        a.update_meeting(m, author("w1"), g.MeetingOperation.ADD_ACTION_ITEM(
            item=item, text="清理三楼杂物", issue_id=ia, owner_party="物业", due=three_days))
        a.update_meeting(m, author("w1"), g.MeetingOperation.TRANSITION_ACTION(item=item, to="agreed", reason=""))
        try:
            a.update_meeting(m, author("w1"), g.MeetingOperation.SET_FORMAT(format="by_pigeon"))
            raise AssertionError("a bad format was taken")
        except g.GridsyncError.Failed as e:
            assert e.code == "invalid_input", e.code
        a.sync(url, token_a, None)
        b.sync(url, token_b, None)
        mb = b.meeting(m)
        assert mb == a.meeting(m)
        assert (mb.status, mb.issue_ids, mb.attendees[0].name, mb.agreements[0].text) == \
            ("scheduled", [ia], "张女士", "物业七日内清理"), mb
        action = mb.action_items[0]
        assert (action.id, action.status, action.due) == (item, "agreed", three_days), action

        # A live query of my G1 cases: a write on another thread, then a
        # sync, each give a new page; closed, it stays quiet.
        pages = Pages()
        live = a.watch_list(g.ListQuery(kind="issue", grid="G1", sort="created", limit=500), pages)
        first = pages.next()
        writer = threading.Thread(target=lambda: a.create_issue(author("w1"), new_issue("另一线程记录", "G1")))
        writer.start()
        writer.join()
        page = pages.next()
        assert page.total == first.total + 1, (first.total, page.total)
        assert [s.pending for s in page.items if s.title == "另一线程记录"] == [True]
        b.create_issue(author("w1"), new_issue("来自b", "G1"))
        b.sync(url, token_b, None)
        a.sync(url, token_a, None)
        page = pages.next()
        while not any(s.title == "来自b" for s in page.items):
            page = pages.next()
        live.stop()
        a.create_issue(author("w1"), new_issue("关闭之后", "G1"))
        try:
            pages.next(timeout=0.5)
            raise AssertionError("a stopped query was called")
        except queue.Empty:
            pass
        del live
        # Search and badges over the phone's own records.
        found = a.list(g.ListQuery(kind="issue", text="另一线程"))
        assert [s.title for s in found.items] == ["另一线程记录"], found.items
        counts = {c.status: c.count for c in a.status_counts(g.ListQuery(kind="issue", grid="G1"))}
        assert counts["signed_for"] == 1 and counts["reported"] >= 3, counts

        # A sync as an asyncio coroutine.
        report = asyncio.run(a.sync_async(url, token_a, None))
        assert report.accepted >= 1 and a.pending_count() == 1, (report, a.pending_count())

        # Errors cross as one enum with a code.
        for call, code in [
            (lambda: a.issue("0190f0f0-0000-7000-8000-000000000000"), "not_found"),
            (lambda: a.update_issue(ia, author("w1"), g.IssueOperation.TRANSITION(to="flying", reason="")), "invalid_input"),
            (lambda: a.update_issue(ia, author("w1"), g.IssueOperation.TRANSITION(to="draft", reason="")), "illegal_transition"),
            (lambda: a.update_issue_json(ia, author("w1"), "{not json"), "invalid_json"),
            (lambda: a.sync(url, "gs1.dev-1." + "00" * 32, None), "rejected"),
            (lambda: a.issue("not-an-id"), "invalid_input"),
        ]:
            try:
                call()
            except g.GridsyncError.Failed as e:
                assert e.code == code, (e.code, code, e.reason)
            else:
                raise AssertionError(f"no error, expected {code}")

        # The transport-neutral form, over urllib.
        session = b.sync_session()
        while True:
            req = urllib.request.Request(
                url + "/v1/sync", data=session.make_request(),
                headers={"Authorization": f"Bearer {token_b}", "Content-Type": "application/octet-stream"})
            with urllib.request.urlopen(req, context=TLS) as r:
                if not session.apply_response(r.read()):
                    break
        assert session.report().rounds >= 1

        # A phone handed on: retired with pending edits, everything reaches
        # the server, then the store is empty and reopens as a fresh one.
        def enrolled(name):
            path = os.path.join(tmp, name)
            store = g.GridStore.open_with(path, g.StoreOptions(key=g.generate_store_key()))
            _, code = post(url + "/v1/admin/enrollments", {"worker": "w1"}, ADMIN)
            return path, store, store.enroll(url, code["code"])

        def clerk_total():
            _, clerk = post(url + "/v1/admin/office-users", {"worker": "clerk", "role": "office"}, ADMIN)
            _, page = get(url + "/v1/office/issues?limit=1", clerk["token"])
            return page["total"]

        before = clerk_total()
        path_r, r, er = enrolled("retiring")
        kept = r.create_issue(author("w1"), new_issue("交接前的记录", "G1"))
        r.sync(url, er.token, None)
        r.update_issue(kept, author("w1"), g.IssueOperation.ADD_NOTE(text="交接前补充"))
        r.create_issue(author("w1"), new_issue("交接当天的记录", "G1"))
        assert r.pending_count() == 2
        # Its photo is sealed on the phone: read through the store, no path.
        sealed_photo = os.path.join(tmp, "sealed-photo.jpg")
        with open(sealed_photo, "wb") as f:
            f.write(photo_bytes[::-1])
        sp = r.attach_file(g.AttachTarget.ISSUE(id=kept), author("w1"), sealed_photo, "image/jpeg", "交接")
        assert r.read_file(sp.hash) == photo_bytes[::-1]
        assert r.issue(kept).attachments[-1].local_path is None
        try:
            r.file_path(sp.hash)
            raise AssertionError("a sealed file's path was given")
        except g.GridsyncError.Failed as e:
            assert e.code == "invalid_input", e.code
        status, life = post(url + f"/v1/admin/devices/{er.device_id}/retire", {}, ADMIN)
        assert (status, life["state"]) == (200, "retiring"), (status, life)
        done = r.sync(url, er.token, None)
        assert done.device_order == "retire" and done.erased and done.erase_reported, done
        assert done.accepted == 2 and done.discarded == 0, done
        assert clerk_total() == before + 2
        # The sealed photo reached the server as it was taken.
        with open(os.path.join(tmp, "server", "store", "files", sp.hash[:2], sp.hash), "rb") as f:
            assert f.read() == photo_bytes[::-1]
        assert r.list(g.ListQuery()).total == 0 and r.pending_count() == 0
        del r
        fresh = g.GridStore.open(path_r, "")
        assert not fresh.is_enrolled() and fresh.list(g.ListQuery()).total == 0
        del fresh
        _, devices = get(url + "/v1/admin/devices", ADMIN)
        row = next(d for d in devices["devices"] if d["id"] == er.device_id)
        assert row["state"] == "retired", row

        # A phone stolen: wiped at its next contact, pending work included;
        # its token is refused for everything else from then on.
        _, w, ew = enrolled("stolen")
        w.create_issue(author("w1"), new_issue("被盗手机上的记录", "G1"))
        status, life = post(url + f"/v1/admin/devices/{ew.device_id}/wipe", {}, ADMIN)
        assert (status, life["state"]) == (200, "wipe_pending"), (status, life)
        done = w.sync(url, ew.token, None)
        assert done.device_order == "wipe" and done.erased and done.discarded == 1, done
        assert w.list(g.ListQuery()).total == 0
        assert clerk_total() == before + 2
        status, body = get(url + "/v1/files/" + "ab" * 32, ew.token)
        assert (status, body["code"]) == (410, "wipe"), (status, body)
        try:
            w.enroll(url, "whatever")
            raise AssertionError("an erased store enrolled")
        except g.GridsyncError.Failed as e:
            assert e.code == "erased", e.code
        del w

        # Per-call overhead, for the record.
        t = time.perf_counter()
        for _ in range(1000):
            g.version()
        trivial = (time.perf_counter() - t) / 1000
        print(f"python: trivial call {trivial * 1e6:.1f} µs")
        print("python bindings: ok")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    sys.exit(main())
