// gridsync-ffi from Kotlin on the JVM (JNA): two device stores enrolled in
// place record issues offline, sync through a real server this test
// starts, converge, see a status conflict, have an out-of-scope write
// refused and get error codes; a council meeting travels as typed records;
// a live query follows a write on another thread and a sync; a sync from a
// coroutine is cancelled mid-way; then the per-call overhead is measured.
// Run by ffi/test-bindings.

import uniffi.gridsync_ffi.*
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit
import java.net.HttpURLConnection
import java.net.URI
import java.nio.file.Files
import javax.net.ssl.HttpsURLConnection
import javax.net.ssl.SSLContext
import javax.net.ssl.TrustManagerFactory

const val ADMIN = "kotlin-binding-test-admin"

// The server serves HTTPS with a self-signed certificate ffi/test-bindings
// made; the library pins it, and the test's own HTTP client trusts it.
val CERT: String = System.getenv("GRIDSYNC_TEST_TLS_CERT")
val KEY: String = System.getenv("GRIDSYNC_TEST_TLS_KEY")
val TLS: SSLContext by lazy {
    val cert = java.io.File(CERT).inputStream().use {
        java.security.cert.CertificateFactory.getInstance("X.509").generateCertificate(it)
    }
    val store = java.security.KeyStore.getInstance(java.security.KeyStore.getDefaultType())
    store.load(null, null)
    store.setCertificateEntry("gridsync-test", cert)
    val trust = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm())
    trust.init(store)
    SSLContext.getInstance("TLS").apply { init(null, trust.trustManagers, null) }
}

interface CLib : com.sun.jna.Library {
    fun getpid(): Int
}

fun check(ok: Boolean, what: () -> String) {
    if (!ok) throw AssertionError(what())
}

fun post(url: String, body: String, token: String): Pair<Int, String> {
    val c = URI(url).toURL().openConnection() as HttpURLConnection
    if (c is HttpsURLConnection) c.sslSocketFactory = TLS.socketFactory
    c.requestMethod = "POST"
    c.doOutput = true
    c.setRequestProperty("Content-Type", "application/json")
    c.setRequestProperty("Authorization", "Bearer $token")
    c.outputStream.use { it.write(body.toByteArray()) }
    val status = c.responseCode
    val text = (if (status < 400) c.inputStream else c.errorStream)?.bufferedReader()?.readText() ?: ""
    return status to text
}

fun field(json: String, name: String): String =
    Regex("\"$name\":\"([^\"]*)\"").find(json)?.groupValues?.get(1) ?: error("no $name in $json")

fun author() = AuthorRecord(user = "w1", role = "grid_worker")

fun newIssue(title: String, grid: String) = NewIssueRecord(
    title = title, kind = "complaint", category = "facilities.lighting", urgency = "yellow",
    source = "grid_patrol", externalRef = null, originalStatement = "楼道灯坏了",
    description = "居民反映楼道照明损坏", report = true,
    reporter = ReporterRecord(name = "张女士", phone = "13800000000", anonymous = false, mayCallBack = true),
    street = "S1", community = "C1", grid = grid, building = "3号楼", address = "幸福路 12 号",
)

fun allIssues(s: GridStore) =
    s.list(ListQuery(kind = "issue", grid = null, status = null, open = null, overdue = null,
        conflict = null, sort = null, offset = 0u, limit = 0u)).items.map { it.id }.toSet()

fun expectCode(code: String, call: () -> Unit) {
    try {
        call()
    } catch (e: GridsyncException.Failed) {
        check(e.code == code) { "expected $code, got ${e.code}: ${e.reason}" }
        return
    }
    throw AssertionError("no error, expected $code")
}

fun main() {
    val tmp = Files.createTempDirectory("gridsync-kt").toFile()
    val server = ProcessBuilder(System.getenv("GRIDSYNC_SERVER_BIN"), "serve", "--listen", "127.0.0.1:0",
        "--data-dir", tmp.resolve("server").path, "--tls-cert", CERT, "--tls-key", KEY)
    server.environment()["GRIDSYNC_ADMIN_TOKEN"] = ADMIN
    server.environment()["RUST_LOG"] = "warn"
    server.redirectError(ProcessBuilder.Redirect.INHERIT)
    val proc = server.start()
    try {
        // The banner comes once the data is open, after a "listening" line.
        val reader = proc.inputStream.bufferedReader()
        var banner = reader.readLine()
        while (banner != null && !banner.startsWith("gridsync serving on ")) banner = reader.readLine()
        check(banner != null && "https://" in banner) { "not HTTPS: $banner" }
        val url = "https://" + banner.substringAfter("https://").substringBefore(" ")
        for ((path, body) in listOf(
            "/v1/admin/streets" to """{"id":"S1"}""",
            "/v1/admin/communities" to """{"id":"C1","street":"S1"}""",
            "/v1/admin/grids" to """{"id":"G1","community":"C1"}""",
            "/v1/admin/grids" to """{"id":"G2","community":"C1"}""",
            "/v1/admin/workers" to """{"id":"w1","grids":["G1"]}""",
            "/v1/admin/workers" to """{"id":"clerk","communities":["C1"]}""",
        )) {
            val (status, text) = post(url + path, body, ADMIN)
            check(status < 300) { "$path: $status $text" }
        }
        // Not trusted until pinned: the usual web roots do not know it.
        run {
            val (_, text) = post("$url/v1/admin/enrollments", """{"worker":"w1"}""", ADMIN)
            val probe = GridStore.open(tmp.resolve("probe").path, "")
            expectCode("transport") { probe.enroll(url, field(text, "code")) }
            // Nothing is recorded before enrollment.
            expectCode("not_enrolled") { probe.createIssue(author(), newIssue("未登记", "G1")) }
            probe.close()
        }
        // Encrypted at rest: opened with a key, refused with none, with the
        // wrong one or a short one (nothing touched), then rotated.
        run {
            val key = generateStoreKey()
            check(key.size == 32 && !key.contentEquals(generateStoreKey())) { "random 32-byte keys" }
            val dir = tmp.resolve("sealed").path
            val sid = GridStore.openWith(dir, StoreOptions(deviceCode = "K1", key = key)).use {
                it.createIssue(author(), newIssue("加密的记录", "G1"))
            }
            expectCode("wrong_key") { GridStore.openWith(dir, StoreOptions(deviceCode = "K1")) }
            expectCode("wrong_key") { GridStore.openWith(dir, StoreOptions(deviceCode = "K1", key = ByteArray(32))) }
            expectCode("invalid_input") { GridStore.openWith(dir, StoreOptions(deviceCode = "K1", key = key.copyOf(16))) }
            val newKey = generateStoreKey()
            GridStore.openWith(dir, StoreOptions(deviceCode = "K1", key = newKey, previousKey = key)).use {
                check(it.issue(sid).title == "加密的记录") { "rotated store reads its records" }
            }
            expectCode("wrong_key") { GridStore.openWith(dir, StoreOptions(deviceCode = "K1", key = key)) }
        }
        pinCertificate(java.io.File(CERT).readText())
        fun device(name: String): Pair<GridStore, String> {
            val dir = tmp.resolve(name).path
            val (_, text) = post("$url/v1/admin/enrollments", """{"worker":"w1"}""", ADMIN)
            // Enrolled in place: the store takes the code the server gives.
            val store = GridStore.open(dir, "")
            check(store.deviceCode() == "" && !store.isEnrolled()) { "not enrolled yet" }
            val enrolled = store.enroll(url, field(text, "code"))
            check(store.deviceCode() == enrolled.deviceCode && store.isEnrolled()) { "enrolled in place" }
            // Once only: a second code is refused before it is spent.
            val (_, again) = post("$url/v1/admin/enrollments", """{"worker":"w1"}""", ADMIN)
            expectCode("already_enrolled") { store.enroll(url, field(again, "code")) }
            return store to enrolled.token
        }
        val (a, tokenA) = device("a")
        val (b, tokenB) = device("b")

        val ia = a.createIssue(author(), newIssue("楼道灯不亮", "G1"))
        val ib = b.createIssue(author(), newIssue("垃圾清运不及时", "G1"))
        val outside = a.createIssue(author(), newIssue("别的网格", "G2"))
        a.updateIssue(ia, author(), IssueOperation.AddNote("已上门核实"))
        // More time asked from the phone: flagged until the office answers.
        check(!a.issue(ia).extensionRequested) { "no request yet" }
        val threeDays = System.currentTimeMillis() + 3L * 24 * 3600 * 1000
        a.updateIssue(ia, author(), IssueOperation.RequestExtension(threeDays, "需协调物业"))
        check(a.issue(ia).extensionRequested) { "the request is flagged" }
        val changed = mutableListOf<String>()
        b.addChangeListener(object : ChangeListener {
            override fun onChange(ids: List<String>) { synchronized(changed) { changed.addAll(ids) } }
        })
        var rounds = 0u
        val report = a.sync(url, tokenA, object : ProgressListener {
            override fun onProgress(progress: SyncProgress) { rounds = progress.rounds }
        })
        check(rounds >= 1u) { "progress reported" }
        check(report.refused.map { it.id to it.code } == listOf(outside to "out_of_scope")) { "refused: ${report.refused}" }
        b.sync(url, tokenB, null)
        a.sync(url, tokenA, null)
        check(ia in changed) { "change listener: $changed" }
        check(allIssues(b) == setOf(ia, ib)) { "b holds ${allIssues(b)}" }
        check(allIssues(a) == setOf(ia, ib, outside)) { "a holds ${allIssues(a)}" }
        check(a.issue(ia) == b.issue(ia)) { "views differ" }
        check(a.pendingCount() == 1uL) { "the refused record stays pending" }

        // Accepting is the office's: the phone refuses it, the office does it.
        expectCode("forbidden") { a.updateIssue(ia, author(), IssueOperation.Transition("accepted", "")) }
        val (_, officeUser) = post("$url/v1/admin/office-users", """{"worker":"clerk","role":"community"}""", ADMIN)
        for (to in listOf("accepted", "dispatched")) {
            val (status, text) = post("$url/v1/office/issues/$ia/ops",
                """{"op":"transition","args":{"to":"$to","reason":""}}""", field(officeUser, "token"))
            check(status == 200) { "office $to: $status $text" }
        }

        // A status conflict.
        a.sync(url, tokenA, null); b.sync(url, tokenB, null)
        a.updateIssue(ia, author(), IssueOperation.Transition("signed_for", ""))
        b.updateIssue(ia, author(), IssueOperation.Transition("returned", "不属本网格"))
        a.sync(url, tokenA, null); b.sync(url, tokenB, null); a.sync(url, tokenA, null)
        check(a.issue(ia).statusCandidates == listOf("returned", "signed_for")) { "conflict: ${a.issue(ia).statusCandidates}" }
        check(a.issue(ia) == b.issue(ia)) { "views differ in conflict" }
        a.updateIssue(ia, author(), IssueOperation.ResolveStatusConflict("signed_for", "核实"))
        a.sync(url, tokenA, null); b.sync(url, tokenB, null)
        check(b.issue(ia).status == "signed_for" && b.issue(ia).statusCandidates.isEmpty()) { "settled" }

        // A photo taken offline on a reaches b byte for byte, and the server.
        val photoBytes = ByteArray(600_000) { i -> ((i * 7919) % 251).toByte() }
        val photo = tmp.resolve("photo.jpg").apply { writeBytes(photoBytes) }
        val att = a.attachFile(AttachTarget.Issue(ia), author(), photo.path, "image/jpeg", "楼道堆物")
        check(att.size == 600_000uL && att.state == "unsent") { "attached: $att" }
        var chunksSent = 0u
        a.sync(url, tokenA, object : ProgressListener {
            override fun onProgress(progress: SyncProgress) { chunksSent = maxOf(chunksSent, progress.fileChunksSent) }
        })
        check(chunksSent == 3u) { "chunks sent: $chunksSent" }
        check(a.issue(ia).attachments[0].state == "here") { "sent: ${a.issue(ia).attachments}" }
        b.sync(url, tokenB, null)
        val seen = b.issue(ia).attachments[0]
        check(seen.hash == att.hash && seen.state == "missing" && seen.localPath == null) { "b sees $seen" }
        var received = 0u
        val path = b.fetchFile(url, tokenB, seen.hash, seen.size, object : ProgressListener {
            override fun onProgress(progress: SyncProgress) { received = progress.fileChunksReceived }
        })
        check(java.io.File(path).readBytes().contentEquals(photoBytes)) { "b's copy differs" }
        check(received == 3u) { "chunks received: $received" }
        check(b.prefetchFiles(url, tokenB, 1_000_000_000uL) == 0u) { "nothing left to prefetch" }
        val onServer = tmp.resolve("server/store/files/${att.hash.take(2)}/${att.hash}")
        check(onServer.readBytes().contentEquals(photoBytes)) { "the server's copy differs" }

        // A council meeting as typed records: convened on a, with a
        // resident at the table, an agreement and an action item; the same
        // on b after a sync.
        val m = a.createMeeting(author(), NewMeetingRecord(
            topic = "楼道堆物议事", level = "grid", format = "in_person", venue = "幸福社区议事厅",
            groupRef = "", convener = "w1", scheduledAt = threeDays, street = "S1", community = "C1",
            grid = "G1", building = "3号楼", address = "幸福路 12 号", agenda = "清理楼道杂物",
            issueIds = listOf(ia)))
        a.updateMeeting(m, author(), MeetingOperation.AddAttendee(NewAttendeeRecord(
            role = "requester", organisation = "3号楼", name = "张女士", contact = "13800000000",
            attended = true, online = false)))
        a.updateMeeting(m, author(), MeetingOperation.AddAgreement("物业七日内清理"))
        val item = newRecordId()
        a.updateMeeting(m, author(), MeetingOperation.AddActionItem(item, "清理三楼杂物", ia, "物业", threeDays))
        a.updateMeeting(m, author(), MeetingOperation.TransitionAction(item, "agreed", ""))
        a.updateMeeting(m, author(), MeetingOperation.SetHeldAt(System.currentTimeMillis()))
        expectCode("invalid_input") { a.updateMeeting(m, author(), MeetingOperation.SetLevel("planet")) }
        a.sync(url, tokenA, null); b.sync(url, tokenB, null)
        val mb = b.meeting(m)
        check(mb == a.meeting(m)) { "meetings differ" }
        check(mb.status == "held" && mb.issueIds == listOf(ia)) { "meeting: $mb" }
        check(mb.attendees.single().name == "张女士") { "attendees: ${mb.attendees}" }
        check(mb.agreements.single().text == "物业七日内清理") { "agreements: ${mb.agreements}" }
        val action = mb.actionItems.single()
        check(action.id == item && action.status == "agreed" && action.due == threeDays) { "item: $action" }

        // A live query: my G1 cases, following a write on another thread
        // and a sync, then closed.
        val pages = LinkedBlockingQueue<SummaryPage>()
        val live = a.watchList(ListQuery(kind = "issue", grid = "G1", sort = "created", limit = 500u),
            object : LiveQueryListener {
                override fun onResult(page: SummaryPage) { pages.put(page) }
            })
        val first = pages.poll(10, TimeUnit.SECONDS) ?: error("no first page")
        check(first.total == allIssues(a).size.toULong() - 1uL) { "first page: ${first.total}" }
        Thread { a.createIssue(author(), newIssue("另一线程记录", "G1")) }.apply { start(); join() }
        val afterWrite = pages.poll(10, TimeUnit.SECONDS) ?: error("no page after a write")
        check(afterWrite.total == first.total + 1uL) { "after the write: ${afterWrite.total}" }
        check(afterWrite.items.single { it.title == "另一线程记录" }.pending) { "not yet uploaded" }
        b.createIssue(author(), newIssue("来自b", "G1"))
        b.sync(url, tokenB, null); a.sync(url, tokenA, null)
        var synced = pages.poll(10, TimeUnit.SECONDS) ?: error("no page after a sync")
        while (synced.items.none { it.title == "来自b" }) {
            synced = pages.poll(10, TimeUnit.SECONDS) ?: error("the sync's page never came")
        }
        check(synced.items.none { it.pending }) { "all uploaded after the sync" }
        live.close()
        a.createIssue(author(), newIssue("关闭之后", "G1"))
        check(pages.poll(500, TimeUnit.MILLISECONDS) == null) { "a closed query was called" }
        // Search and badges over the phone's own records.
        val found = a.list(ListQuery(kind = "issue", text = "另一线程"))
        check(found.items.map { it.title } == listOf("另一线程记录")) { "search: ${found.items}" }
        val counts = a.statusCounts(ListQuery(kind = "issue", grid = "G1")).associate { it.status to it.count }
        check(counts["reported"]!! >= 3uL && counts["signed_for"] == 1uL) { "counts: $counts" }

        // A sync from a coroutine, cancelled after its first round: the
        // store stays consistent and the next sync completes. (Texts that
        // do not compress, so the upload takes several 1 MiB rounds.)
        val random = java.util.Random(12345)
        repeat(120) { n ->
            val text = (0 until 12000).map { '\u4e00' + random.nextInt(20000) }.joinToString("")
            a.createIssue(author(), newIssue("批量 $n", "G1").copy(description = text))
        }
        var job: Job? = null
        var roundsBeforeCancel = 0u
        runBlocking {
            job = launch(Dispatchers.IO) {
                a.syncAsync(url, tokenA, object : ProgressListener {
                    override fun onProgress(progress: SyncProgress) {
                        roundsBeforeCancel = maxOf(roundsBeforeCancel, progress.rounds)
                        job?.cancel()
                    }
                })
            }
            job!!.join()
        }
        check(job!!.isCancelled) { "the coroutine was cancelled" }
        // The next sync waits for the cancelled one to stop, then sends
        // what it left.
        val done = runBlocking { a.syncAsync(url, tokenA, null) }
        check(done.accepted >= 1u) { "the cancelled sync sent everything ($roundsBeforeCancel rounds)" }
        check(a.pendingCount() == 1uL) { "the next sync completes: ${a.pendingCount()} pending" }
        b.sync(url, tokenB, null)
        val totalA = a.list(ListQuery(kind = "issue", limit = 1u)).total
        val totalB = b.list(ListQuery(kind = "issue", limit = 1u)).total
        check(totalB == totalA - 1uL) { "b has all but the refused one: $totalB of $totalA" }

        // Error codes.
        expectCode("not_found") { a.issue("0190f0f0-0000-7000-8000-000000000000") }
        expectCode("illegal_transition") { a.updateIssue(ia, author(), IssueOperation.Transition("draft", "")) }
        expectCode("invalid_input") { a.updateIssue(ia, author(), IssueOperation.Transition("flying", "")) }
        expectCode("rejected") { a.sync(url, "gs1.dev-1." + "00".repeat(32), null) }

        // One store shared by four threads.
        val before = a.list(ListQuery(kind = "issue", grid = null, status = null, open = null,
            overdue = null, conflict = null, sort = null, offset = 0u, limit = 1u)).total
        val threads = (1..4).map { t ->
            Thread { for (i in 0 until 10) a.createIssue(author(), newIssue("线程 $t-$i", "G1")) }
        }
        threads.forEach { it.start() }
        threads.forEach { it.join() }
        val after = a.list(ListQuery(kind = "issue", grid = null, status = null, open = null,
            overdue = null, conflict = null, sort = null, offset = 0u, limit = 1u)).total
        check(after == before + 40uL) { "threads: $before -> $after" }

        // A phone handed on: retired with pending edits, everything reaches
        // the server, then the store is empty and reopens as a fresh one;
        // a phone stolen: wiped at its next contact, its token dead.
        run {
            fun enrolled(name: String): Triple<String, GridStore, EnrollmentRecord> {
                val path = tmp.resolve(name).path
                val store = GridStore.openWith(path, StoreOptions(key = generateStoreKey()))
                val (_, code) = post("$url/v1/admin/enrollments", """{"worker":"w1"}""", ADMIN)
                return Triple(path, store, store.enroll(url, field(code, "code")))
            }
            val all = ListQuery(kind = "issue", grid = null, status = null, open = null,
                overdue = null, conflict = null, sort = null, offset = 0u, limit = 1u)
            val (path, r, er) = enrolled("retiring")
            val kept = r.createIssue(author(), newIssue("交接前的记录", "G1"))
            r.sync(url, er.token, null)
            r.updateIssue(kept, author(), IssueOperation.AddNote("交接前补充"))
            r.createIssue(author(), newIssue("交接当天的记录", "G1"))
            check(r.pendingCount() == 2uL) { "two records pending" }
            // Its photo is sealed on the phone: read through the store, no path.
            val sealedPhoto = tmp.resolve("sealed-photo.jpg").apply { writeBytes(photoBytes.reversedArray()) }
            val sp = r.attachFile(AttachTarget.Issue(kept), author(), sealedPhoto.path, "image/jpeg", "交接")
            check(r.readFile(sp.hash).contentEquals(photoBytes.reversedArray())) { "sealed photo reads back" }
            check(r.issue(kept).attachments.last().localPath == null) { "no path to a sealed file" }
            expectCode("invalid_input") { r.filePath(sp.hash) }
            val (status, life) = post("$url/v1/admin/devices/${er.deviceId}/retire", "{}", ADMIN)
            check(status == 200 && "retiring" in life) { "retire: $status $life" }
            val done = r.sync(url, er.token, null)
            check(done.deviceOrder == "retire" && done.erased && done.eraseReported) { "retired: $done" }
            check(done.accepted == 2u && done.discarded == 0u) { "uploaded first: $done" }
            check(r.list(all).total == 0uL && r.pendingCount() == 0uL) { "erased" }
            r.close()
            GridStore.open(path, "").use { fresh ->
                check(!fresh.isEnrolled() && fresh.list(all).total == 0uL) { "a fresh store" }
            }

            val (_, w, ew) = enrolled("stolen")
            w.createIssue(author(), newIssue("被盗手机上的记录", "G1"))
            val (wiped, wlife) = post("$url/v1/admin/devices/${ew.deviceId}/wipe", "{}", ADMIN)
            check(wiped == 200 && "wipe_pending" in wlife) { "wipe: $wiped $wlife" }
            val gone = w.sync(url, ew.token, null)
            check(gone.deviceOrder == "wipe" && gone.erased && gone.discarded == 1u) { "wiped: $gone" }
            check(w.list(all).total == 0uL) { "nothing left" }
            val (refused, body) = post("$url/v1/device/erased", """{"order":"bogus"}""", ew.token)
            check(refused == 400) { "a bad report: $refused $body" }
            // The token is good for nothing else.
            val (syncStatus, why) = post("$url/v1/sync", "{}", ew.token)
            check(syncStatus == 410 && "\"wipe\"" in why) { "a wiped token syncs: $syncStatus $why" }
            expectCode("erased") { w.enroll(url, "whatever") }
            w.close()
        }

        // Per-call overhead from Kotlin (medians of 7 batches).
        fun perCall(n: Int, f: () -> Unit): Double {
            repeat(n) { f() }
            val times = (1..7).map {
                val t = System.nanoTime()
                repeat(n) { f() }
                (System.nanoTime() - t).toDouble() / n
            }.sorted()
            return times[3] / 1000.0
        }
        for (i in 0 until 60) a.createIssue(author(), newIssue("批量 $i", "G1"))
        val q = ListQuery(kind = "issue", grid = null, status = null, open = null, overdue = null,
            conflict = null, sort = null, offset = 0u, limit = 50u)
        val trivial = perCall(20000) { version() }
        // The floor of any JNA binding: libc's getpid through JNA.
        val libc = com.sun.jna.Native.load("c", CLib::class.java)
        val jnaFloor = perCall(20000) { libc.getpid() }
        val list50 = perCall(200) { a.list(q) }
        val create = perCall(20) { a.createIssue(author(), newIssue("计时", "G1")) }
        println(("kotlin per call: trivial %.2f µs (JNA floor, libc getpid: %.2f µs), " +
            "list of 50 %.1f µs, one create %.1f µs").format(trivial, jnaFloor, list50, create))
        a.close(); b.close()
        println("kotlin bindings: ok")
    } finally {
        proc.destroy()
        proc.waitFor()
    }
}
