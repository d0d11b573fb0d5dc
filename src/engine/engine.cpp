/*
 * engine.cpp - the one C++ file of faiss-proxy: a small C interface over
 * FAISS 1.7.3's C++ API (Debian ships no compiled FAISS C API).
 *
 * The engine holds one faiss::Index and only ever appends to it; positions
 * are FAISS's sequential ids. The server hides deleted positions and applies
 * metadata filters by passing an allowed set, which this file turns into a
 * faiss::IDSelector where the index type honours one (Flat, SQ, IVF, HNSW, and
 * PreTransform chains over those), and into an over-fetch-and-filter pass
 * where it does not (PQ, LSH, Refine, IVF fast-scan, ...). An approximate
 * search that comes back with fewer than min(k, allowed) hits for a query is
 * repeated for that query exhaustively, so filtering never costs results.
 *
 * Every entry point catches every exception: nothing C++ crosses into C.
 * Some FAISS code paths abort() on bad parameters instead of throwing
 * (e.g. "IVF0,Flat"); fpx_engine_create refuses those descriptions first.
 */
#include "engine/engine.h"
#include "engine/describe.h"

#include <faiss/AutoTune.h>
#include <faiss/impl/ResidualQuantizer.h>
#include <faiss/impl/ProductAdditiveQuantizer.h>
#include <faiss/IndexAdditiveQuantizer.h>
#include <faiss/IndexAdditiveQuantizerFastScan.h>
#include <faiss/Clustering.h>
#include <faiss/IndexBinaryFlat.h>
#include <faiss/IndexBinaryHNSW.h>
#include <faiss/IndexBinaryHash.h>
#include <faiss/IndexBinaryIVF.h>
#include <faiss/IndexFastScan.h>
#include <faiss/impl/pq4_fast_scan.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexFlatCodes.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFAdditiveQuantizer.h>
#include <faiss/IndexIVFAdditiveQuantizerFastScan.h>
#include <faiss/IndexIVFFastScan.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexIVFPQR.h>
#include <faiss/IndexLSH.h>
#include <faiss/IndexLattice.h>
#include <faiss/IndexNSG.h>
#include <faiss/Index2Layer.h>
#include <faiss/IndexRowwiseMinMax.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/IndexRefine.h>
#include <faiss/IndexScalarQuantizer.h>
#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/HNSW.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/impl/io.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <faiss/invlists/BlockInvertedLists.h>
#include <faiss/invlists/InvertedLists.h>
#include <faiss/utils/distances.h>

#include <atomic>
#include <cxxabi.h>
#include <dlfcn.h>
#include <type_traits>
#include <typeinfo>
#include <omp.h>
#include <string>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

using faiss::Index;
using idx_t = faiss::Index::idx_t;

struct fpx_engine {
    std::unique_ptr<Index> index;            /* a float index, or */
    std::unique_ptr<faiss::IndexBinary> bin; /* a binary one */
    /* A flat L2 index's squared vector norms, kept as vectors are added: FAISS
     * 1.7.3 recomputes them in every BLAS search, a whole extra pass over the
     * vectors that costs as much as the search of a small batch. */
    std::vector<float> norms;
    /* FAISS 1.7.3's IndexHNSW::search ignores SearchParametersHNSW::efSearch
     * and reads hnsw.efSearch: a search asking for another efSearch sets it
     * for its own call under this lock held exclusively, every other HNSW
     * search, and every writer of the index's bytes (a snapshot must never
     * keep a search's own value), holds it shared. */
    mutable std::shared_mutex knobs;
    /* FAISS's fast-scan implementations 2-4 (IndexFastScan) and 1-2
     * (IndexIVFFastScan) read the codes unpacked, through orig_codes or
     * orig_invlists: pointers into the IndexPQ or IndexIVFPQ the fast-scan
     * index was made from. The server keeps no such index; while one of those
     * implementations is selected, these hold the index's own codes unpacked
     * and FAISS's pointer is set to them (sync_orig_codes). */
    std::vector<uint8_t> orig_codes;
    std::unique_ptr<faiss::InvertedLists> orig_invlists;
};

/* BLAS's single-precision matrix product, as FAISS calls it (LP64: int). */
extern "C" int sgemm_(const char *transa, const char *transb, int *m, int *n, int *k,
                      const float *alpha, const float *a, int *lda, const float *b, int *ldb,
                      float *beta, float *c, int *ldc);

namespace {

/* FAISS 1.7.3 reads a residual quantizer back by computing its codebook
 * tables, from codebooks an untrained one does not have: it crashes, so an
 * IVF-RQ index created and not yet trained could not be loaded from its
 * snapshot, copied or exported. Its writer and reader leave that step out
 * when the quantizer's train_type holds Skip_codebook_tables, so the server
 * writes untrained residual quantizers with that flag and clears it when it
 * reads one back (an untrained quantizer has no tables to compute; training
 * computes them). */
void additive_quantizers(const Index *idx, std::vector<faiss::AdditiveQuantizer *> &out) {
    if (!idx)
        return;
    if (auto p = dynamic_cast<const faiss::IndexPreTransform *>(idx))
        return additive_quantizers(p->index, out);
    if (auto m = dynamic_cast<const faiss::IndexIDMap *>(idx))
        return additive_quantizers(m->index, out);
    if (auto r = dynamic_cast<const faiss::IndexRefine *>(idx)) {
        additive_quantizers(r->base_index, out);
        return additive_quantizers(r->refine_index, out);
    }
    if (auto h = dynamic_cast<const faiss::IndexHNSW *>(idx))
        return additive_quantizers(h->storage, out);
    faiss::AdditiveQuantizer *aq = nullptr;
    if (auto ivf = dynamic_cast<const faiss::IndexIVF *>(idx))
        additive_quantizers(ivf->quantizer, out);
    if (auto a = dynamic_cast<const faiss::IndexAdditiveQuantizer *>(idx))
        aq = a->aq;
    else if (auto a = dynamic_cast<const faiss::IndexIVFAdditiveQuantizer *>(idx))
        aq = a->aq;
    else if (auto a = dynamic_cast<const faiss::IndexAdditiveQuantizerFastScan *>(idx))
        aq = a->aq;
    else if (auto a = dynamic_cast<const faiss::AdditiveCoarseQuantizer *>(idx))
        aq = a->aq;
    else if (auto a = dynamic_cast<const faiss::IndexIVFAdditiveQuantizerFastScan *>(idx))
        aq = a->aq;
    if (!aq)
        return;
    out.push_back(aq);
    if (auto pq = dynamic_cast<faiss::ProductAdditiveQuantizer *>(aq))
        for (auto q : pq->quantizers)
            out.push_back(q);
}

/* The residual quantizers among them. */
std::vector<faiss::ResidualQuantizer *> residual_quantizers(const Index *idx) {
    std::vector<faiss::AdditiveQuantizer *> aqs;
    std::vector<faiss::ResidualQuantizer *> out;
    additive_quantizers(idx, aqs);
    for (auto aq : aqs)
        if (auto rq = dynamic_cast<faiss::ResidualQuantizer *>(aq))
            out.push_back(rq);
    return out;
}

/* faiss::write_index, untrained residual quantizers flagged (above). */
void write_float(const Index *idx, faiss::IOWriter *w) {
    std::vector<faiss::ResidualQuantizer *> rqs = residual_quantizers(idx), flagged;
    if (rqs.empty())
        return faiss::write_index(idx, w);
    /* two writers of one index (a snapshot and an export hold its lock
     * shared) must not flag and unflag it under each other */
    static std::mutex flag_mu;
    std::lock_guard<std::mutex> hold(flag_mu);
    for (auto rq : rqs)
        if (!rq->is_trained && !(rq->train_type & faiss::ResidualQuantizer::Skip_codebook_tables)) {
            rq->train_type |= faiss::ResidualQuantizer::Skip_codebook_tables;
            flagged.push_back(rq);
        }
    struct Unflag {
        std::vector<faiss::ResidualQuantizer *> &v;
        ~Unflag() {
            for (auto rq : v)
                rq->train_type &= ~faiss::ResidualQuantizer::Skip_codebook_tables;
        }
    } unflag{flagged};
    faiss::write_index(idx, w);
}

/* FAISS 1.7.3 reads an Index2Layer's coarse quantizer without making it
 * the owner's (its factory does): every copy read back leaked it. */
void own_two_level_quantizer(Index *idx) {
    for (;;) {
        if (auto pt = dynamic_cast<faiss::IndexPreTransform *>(idx))
            idx = pt->index;
        else if (auto m = dynamic_cast<faiss::IndexIDMap *>(idx))
            idx = m->index;
        else if (auto h = dynamic_cast<faiss::IndexHNSW *>(idx))
            idx = h->storage;
        else if (auto rf = dynamic_cast<faiss::IndexRefine *>(idx))
            idx = rf->base_index;
        else
            break;
    }
    if (auto tl = dynamic_cast<faiss::Index2Layer *>(idx))
        tl->q1.own_fields = true;
}

/* faiss::read_index, the flag of untrained residual quantizers cleared. */
Index *read_float(faiss::IOReader *r) {
    Index *idx = faiss::read_index(r);
    own_two_level_quantizer(idx);
    for (auto rq : residual_quantizers(idx))
        if (!rq->is_trained)
            rq->train_type &= ~faiss::ResidualQuantizer::Skip_codebook_tables;
    /* FAISS 1.7.3 reads a norm quantizer's codes (qnorm, an IndexFlat1D) but
     * not the sort order its search walks: an index read back crashed at its
     * first add. The order follows from the codes. */
    std::vector<faiss::AdditiveQuantizer *> aqs;
    additive_quantizers(idx, aqs);
    for (auto aq : aqs)
        if (aq->qnorm.ntotal > 0 && aq->qnorm.perm.size() != (size_t)aq->qnorm.ntotal)
            aq->qnorm.update_permutation();
    return idx;
}

/* Queries below this count run on one OpenMP thread. A single query on a
 * 2-core machine gains little from fanning out (the fork/join costs about what
 * it saves) and would steal the core another worker thread is using for
 * another client; a batch is worth parallelising. */
constexpr idx_t kParallelMin = 16;

/* Pooled batches of at least this many queries are padded up to FAISS's BLAS
 * threshold: from 3 queries on, one matrix product beats a scan per query
 * (measured on Debian's generic build, bench/README.md). */
constexpr idx_t kPooledBlasMin = 3;

/* Over-fetch searches work on at most this many result slots at a time. */
constexpr size_t kChunkResults = (size_t)1 << 24;

/* The proto module's error setter (fpx_err is the one type the engine shares). */
#define set_err fpx_err_set

/* FAISS messages start with "Error in <signature> at <file>:<line>: Error: '...'
 * failed: <text>" -- keep the part a user can act on. */
std::string faiss_message(const char *what) {
    std::string s(what ? what : "unknown FAISS error");
    size_t p = s.rfind(" failed: ");
    if (p != std::string::npos)
        return s.substr(p + 9);
    p = s.find(": Error: ");
    if (p != std::string::npos)
        return s.substr(p + 9);
    return s;
}

void threads_for(idx_t n) {
    omp_set_num_threads(n < kParallelMin ? 1 : std::max(1, omp_get_num_procs()));
}

/* FAISS's reader over the caller's bytes, where VectorIOReader would first
 * copy them all into a vector of its own. */
struct BufReader : faiss::IOReader {
    const uint8_t *p;
    size_t len, pos = 0;
    BufReader(const uint8_t *buf, size_t n) : p(buf), len(n) {}
    size_t operator()(void *ptr, size_t size, size_t nitems) override {
        if (size == 0 || nitems == 0)
            return 0;
        size_t n = std::min(nitems, (len - pos) / size);
        memcpy(ptr, p + pos, n * size);
        pos += n * size;
        return n;
    }
};

/* Set by fpx_engine_tune_for_server. */
bool server_tuning = false;

/*
 * Whether this BLAS gives each query's distances the same bits when a batch
 * is cut into slices: the server searches a flat batch one slice per core
 * (search_parallel), which is FAISS's answer only then. OpenBLAS's AVX-512
 * kernels do; its Haswell kernels (which some machines pin with
 * OPENBLAS_CORETYPE) round differently with the slice's size, and then a
 * batch is searched in FAISS's one call, as in-process. Tried once, with
 * FAISS's own call (exhaustive_L2sqr_blas: database rows x queries) on a few
 * shapes, cut in two.
 */
bool blas_cuts_exactly = true;

bool product_cuts_exactly() {
    static const struct {
        int rows, d;
    } shapes[] = {{900, 16}, {1024, 128}, {16, 8}, {1000, 32}, {256, 64}};
    const int nq = 40, half = 17;
    uint32_t r = 12345;
    auto next = [&r] {
        r = r * 1103515245u + 12345u;
        return (float)((r >> 8) & 0xffff) / 65536.0f;
    };
    for (const auto &sh : shapes) {
        int m = sh.rows, k = sh.d, a = half, b = nq - half, n = nq;
        std::vector<float> y((size_t)m * k), x((size_t)nq * k), whole((size_t)m * nq),
            cut((size_t)m * nq);
        for (float &v : y)
            v = next();
        for (float &v : x)
            v = next();
        float one = 1, zero = 0;
        sgemm_("Transpose", "Not transpose", &m, &n, &k, &one, y.data(), &k, x.data(), &k, &zero,
               whole.data(), &m);
        sgemm_("Transpose", "Not transpose", &m, &a, &k, &one, y.data(), &k, x.data(), &k, &zero,
               cut.data(), &m);
        sgemm_("Transpose", "Not transpose", &m, &b, &k, &one, y.data(), &k,
               x.data() + (size_t)a * k, &k, &zero, cut.data() + (size_t)a * m, &m);
        if (memcmp(whole.data(), cut.data(), whole.size() * sizeof(float)) != 0)
            return false;
    }
    return true;
}

/* libgomp's barriers order the OpenMP threads' work in a call before the
 * call returns, but ThreadSanitizer does not see inside libgomp (not built
 * with it): it then reports what those threads read (a search's allowed set
 * on a worker's stack, an index a compaction frees after) as racing with the
 * caller's next write, whenever the reading stack has left its history and
 * the libgomp suppressions cannot match it. In a ThreadSanitizer build each
 * thread of the team releases an atomic after the call, and the runner
 * acquires it; other builds do nothing. */
static void team_handoff() {
#if defined(__SANITIZE_THREAD__)
    std::atomic<int> seen{0};
#pragma omp parallel num_threads(omp_get_num_procs())
    seen.fetch_add(1, std::memory_order_acq_rel);
    (void)seen.load(std::memory_order_acquire);
#endif
}

/*
 * With server tuning, every FAISS call that runs on more than one OpenMP
 * thread runs on a dedicated thread (one for searches, one for builds), one
 * after the other. libgomp keeps a
 * team of threads per thread that starts parallel work: called from many
 * worker threads, the process held many teams, more OpenMP threads than
 * cores, and libgomp then stops spinning between parallel steps and puts its
 * threads to sleep and wakes them instead, which made a batch of IVF queries
 * about 30% slower than the same call in-process. Such a call uses every core
 * anyway, so running them one at a time costs no throughput. Calls on one
 * thread (single queries, small batches) still run in their worker, in
 * parallel with each other.
 */
class TeamRunner {
  public:
    void run(const std::function<void()> &fn) {
        Job job;
        job.fn = &fn;
        std::unique_lock<std::mutex> lk(mu_);
        if (!started_) {
            /* Signals stay with the thread that waits for them (the server's
             * network loop, which may be the first caller): the runner and
             * the OpenMP team it starts take none. */
            sigset_t all, old;
            sigfillset(&all);
            pthread_sigmask(SIG_BLOCK, &all, &old);
            std::thread(&TeamRunner::loop, this).detach(); /* lives as long as the process */
            pthread_sigmask(SIG_SETMASK, &old, nullptr);
            started_ = true;
        }
        queue_.push_back(&job);
        work_.notify_one();
        done_.wait(lk, [&] { return job.done; });
        lk.unlock();
        if (job.error)
            std::rethrow_exception(job.error);
    }

    static bool on_runner() {
        return runner_thread;
    }

  private:
    struct Job {
        const std::function<void()> *fn = nullptr;
        bool done = false;
        std::exception_ptr error;
    };
    void loop() {
        runner_thread = true;
        std::unique_lock<std::mutex> lk(mu_);
        for (;;) {
            work_.wait(lk, [&] { return !queue_.empty(); });
            Job *job = queue_.front();
            queue_.pop_front();
            lk.unlock();
            try {
                (*job->fn)();
            } catch (...) {
                job->error = std::current_exception();
            }
            team_handoff();
            lk.lock();
            job->done = true;
            done_.notify_all();
        }
    }
    std::mutex mu_;
    std::condition_variable work_, done_;
    std::deque<Job *> queue_;
    bool started_ = false;
    static thread_local bool runner_thread;
};
thread_local bool TeamRunner::runner_thread = false;

/* Two runners: one for searches, one for builds (train, add). A train or an
 * HNSW add can run for minutes; on one shared runner every batched search of
 * every other index queued behind it. Two teams on two runners share the
 * cores while both are busy, which costs a build some speed but keeps
 * searches answered. */
enum class Work { search, build };

TeamRunner *team_runner(Work w) {
    /* never destroyed: their threads outlive main */
    static TeamRunner *search = new TeamRunner, *build = new TeamRunner;
    return w == Work::search ? search : build;
}

/* Runs fn with the threading rule for n rows: on the calling thread when it
 * needs one OpenMP thread, on the runner of its kind of work otherwise
 * (server tuning). */
void in_team(idx_t n, const std::function<void()> &fn, Work w = Work::search) {
    if (!server_tuning || n < kParallelMin || TeamRunner::on_runner()) {
        threads_for(n);
        fn();
        return;
    }
    team_runner(w)->run([&] {
        threads_for(n);
        /* A build leaves one core to the searches: on a shared server a
         * tenant's HNSW add or train must not take every core from another
         * tenant's queries (bench/README.md, figure 7). */
        if (w == Work::build && omp_get_num_procs() > 1)
            omp_set_num_threads(omp_get_num_procs() - 1);
        fn();
    });
}

/*
 * FAISS's search statistics (faiss::indexIVF_stats and the others) are
 * process globals that every search adds to, without a lock. A search that
 * reports what it added (fpx_search_params.stats) must run while no other
 * call that can add to them does: every search and every build that searches
 * a counting quantizer holds this lock shared, a counted search holds it
 * exclusively and reads the globals before and after. Reader-preferring
 * (glibc's default kind), and the counted search waits for it at most
 * stats_wait_ms: a waiting counted search never holds back other callers'
 * searches (with a writer-preferring lock, every tenant's searches would
 * queue behind one caller's wait), it is only counted when the others leave
 * it room, and otherwise it searches uncounted (exact 0: the drop-in then
 * raises on reading its counters rather than give other numbers).
 */
struct CounterLock {
    pthread_rwlock_t rw;
    CounterLock() {
        pthread_rwlock_init(&rw, nullptr);
    }
};

std::atomic<int64_t> stats_wait_ms{100};

CounterLock &counter_lock() {
    static CounterLock *l = new CounterLock; /* never destroyed: workers outlive main */
    return *l;
}

/* Held by this thread already: an engine call made under another one (none
 * today) must not take the lock again (a counted call under a shared hold
 * would wait for itself). */
thread_local int counter_depth = 0;

void read_counters(fpx_search_stats *s) {
#define READ_COUNTER(object, field, type) s->object##_##field = (type)faiss::object.field;
    FPX_SEARCH_STATS(READ_COUNTER)
#undef READ_COUNTER
}

/* after - before, field by field (FAISS's counters only grow, except when a
 * program resets them, which no server call does). */
void counters_added(const fpx_search_stats &b, fpx_search_stats *a) {
#define SUBTRACT_COUNTER(object, field, type) a->object##_##field -= b.object##_##field;
    FPX_SEARCH_STATS(SUBTRACT_COUNTER)
#undef SUBTRACT_COUNTER
}

/* The lock for one engine call: shared, or exclusive around a counted search
 * (out: where the counts go; exact starts at 1, the search clears it when it
 * answers otherwise than with FAISS's call). Skipped when `counts` is false
 * (a build that cannot add to the statistics). */
class CounterScope {
  public:
    explicit CounterScope(fpx_search_stats *out, bool counts = true) : out_(out) {
        if (out_) {
            *out_ = fpx_search_stats{};
            out_->exact = 1;
        }
        if (!counts)
            return;
        counted_ = true;
        if (counter_depth++ > 0) {
            if (out_)
                out_->exact = 0; /* nothing measured under an outer call */
            return;
        }
        if (out_) {
            int64_t ms = stats_wait_ms.load();
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_sec += ms / 1000;
            until.tv_nsec += (ms % 1000) * 1000000;
            if (until.tv_nsec >= 1000000000) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000;
            }
            if (ms <= 0 ||
                pthread_rwlock_clockwrlock(&counter_lock().rw, CLOCK_MONOTONIC, &until) != 0) {
                /* not measured alone: searched as any search */
                out_->exact = 0;
                out_ = nullptr;
                pthread_rwlock_rdlock(&counter_lock().rw);
            } else {
                read_counters(&before_);
            }
        } else {
            pthread_rwlock_rdlock(&counter_lock().rw);
        }
        held_ = true;
    }
    ~CounterScope() {
        if (counted_)
            counter_depth--;
        if (!held_)
            return;
        if (out_) {
            int exact = out_->exact;
            read_counters(out_);
            counters_added(before_, out_);
            out_->exact = exact;
        }
        pthread_rwlock_unlock(&counter_lock().rw);
    }
    CounterScope(const CounterScope &) = delete;
    CounterScope &operator=(const CounterScope &) = delete;

  private:
    fpx_search_stats *out_;
    fpx_search_stats before_ = {};
    bool held_ = false, counted_ = false;
};

/* A search of idx can add to FAISS's statistics: it is, or holds, an index
 * type whose search counts (IVF, PQ, HNSW, binary IVF, hash and HNSW). */
bool search_counts(const Index *idx) {
    if (!idx)
        return false;
    if (auto pt = dynamic_cast<const faiss::IndexPreTransform *>(idx))
        return search_counts(pt->index);
    if (auto r = dynamic_cast<const faiss::IndexRefine *>(idx))
        return search_counts(r->base_index) || search_counts(r->refine_index);
    if (auto m = dynamic_cast<const faiss::IndexIDMap *>(idx))
        return search_counts(m->index);
    return dynamic_cast<const faiss::IndexIVF *>(idx) ||
           dynamic_cast<const faiss::IndexPQ *>(idx) || dynamic_cast<const faiss::IndexHNSW *>(idx);
}

/* A build (train, add) of idx searches an index that counts: an IVF's coarse
 * quantizer (training clusters with it, adding assigns with it) when the
 * quantizer is itself an HNSW, IVF, ... A flat quantizer counts nothing,
 * so builds of the common types never wait for a counted search. */
bool build_counts(const Index *idx) {
    if (!idx)
        return false;
    if (auto pt = dynamic_cast<const faiss::IndexPreTransform *>(idx))
        return build_counts(pt->index);
    if (auto r = dynamic_cast<const faiss::IndexRefine *>(idx))
        return build_counts(r->base_index) || build_counts(r->refine_index);
    if (auto m = dynamic_cast<const faiss::IndexIDMap *>(idx))
        return build_counts(m->index);
    if (auto ivf = dynamic_cast<const faiss::IndexIVF *>(idx))
        return search_counts(ivf->quantizer);
    return false;
}

bool build_counts(const faiss::IndexBinary *b) {
    auto ivf = dynamic_cast<const faiss::IndexBinaryIVF *>(b);
    return ivf && !dynamic_cast<const faiss::IndexBinaryFlat *>(ivf->quantizer);
}

/* The answer is not FAISS's own call: the counts are not FAISS's. */
void not_faiss_counts(const fpx_search_params &kn) {
    if (kn.stats)
        kn.stats->exact = 0;
}

/* The flat L2 index idx is, or nullptr. */
const faiss::IndexFlat *flat_l2(const Index *idx) {
    auto f = dynamic_cast<const faiss::IndexFlat *>(idx);
    return f && f->metric_type == faiss::METRIC_L2 ? f : nullptr;
}

/* The fast-scan index at the core of idx (under pre-transforms), flat or
 * IVF, or nullptr. */
faiss::IndexFastScan *core_fast_scan(Index *idx) {
    while (auto pt = dynamic_cast<faiss::IndexPreTransform *>(idx))
        idx = pt->index;
    return dynamic_cast<faiss::IndexFastScan *>(idx);
}

faiss::IndexIVFFastScan *core_ivf_fast_scan(Index *idx) {
    while (auto pt = dynamic_cast<faiss::IndexPreTransform *>(idx))
        idx = pt->index;
    return dynamic_cast<faiss::IndexIVFFastScan *>(idx);
}

/* The 4-bit code m of vector i in FAISS's fast-scan layout (pq4_pack_codes:
 * blocks of bbs vectors; in a block, per pair of codes, groups of 32 vectors
 * in 32 bytes). FAISS 1.7.3's own pq4_get_packed_element ignores the group
 * (and wraps the offset in a byte), so it misreads blocks of more than 32. */
uint8_t packed_code(const uint8_t *codes, size_t bbs, size_t M2, size_t i, size_t m) {
    size_t in = i % bbs, r = in % 32;
    size_t a = (r & 15) < 8 ? 2 * (r & 15) : 2 * ((r & 15) - 8) + 1;
    const uint8_t *blk = codes + (i / bbs) * (bbs * M2 / 2);
    uint8_t byte = blk[((m / 2) * (bbs / 32) + in / 32) * 32 + a + (m & 1) * 16];
    return r >= 16 ? byte >> 4 : byte & 15;
}

/* n vectors' codes unpacked as FAISS's encoders write them (M codes of 4
 * bits, lowest first), code_size bytes each, into out. */
void unpack_codes(const uint8_t *codes, size_t n, size_t bbs, size_t M, size_t M2, size_t code_size,
                  uint8_t *out) {
    memset(out, 0, n * code_size);
    for (size_t i = 0; i < n; i++)
        for (size_t m = 0; m < M; m++)
            out[i * code_size + m / 2] |=
                (uint8_t)(packed_code(codes, bbs, M2, i, m) << (4 * (m & 1)));
}

/* n vectors' codes as unpack_codes gives them, packed into blocks (FAISS's
 * fast-scan layout, the unused bytes 0); blocks holds n rounded up to bbs. */
void pack_codes(const uint8_t *codes, size_t n, size_t bbs, size_t M, size_t M2,
                faiss::AlignedTable<uint8_t> &blocks) {
    if (blocks.size())
        memset(blocks.data(), 0, blocks.size());
    if (n)
        faiss::pq4_pack_codes(codes, n, M, (n + bbs - 1) / bbs * bbs, bbs, M2, blocks.data());
}

/* Rebuilds (or drops) e->orig_codes / e->orig_invlists after the codes or
 * the implementation changed: the unpacked copy exists only while the
 * selected implementation reads it, and always matches the packed codes. */
void sync_orig_codes(fpx_engine *e) {
    Index *idx = e->index ? e->index.get() : nullptr;
    if (faiss::IndexFastScan *fs = idx ? core_fast_scan(idx) : nullptr) {
        fs->orig_codes = nullptr;
        std::vector<uint8_t>().swap(e->orig_codes);
        if (fs->implem < 2 || fs->implem > 4 || fs->nbits != 4)
            return;
        e->orig_codes.resize((size_t)fs->ntotal * fs->code_size);
        unpack_codes(fs->codes.data(), (size_t)fs->ntotal, (size_t)fs->bbs, fs->M, fs->M2,
                     fs->code_size, e->orig_codes.data());
        fs->orig_codes = e->orig_codes.data();
        return;
    }
    faiss::IndexIVFFastScan *ivf = idx ? core_ivf_fast_scan(idx) : nullptr;
    if (!ivf)
        return;
    ivf->orig_invlists = nullptr;
    e->orig_invlists.reset();
    if ((ivf->implem != 1 && ivf->implem != 2) || ivf->nbits != 4)
        return;
    auto *orig = new faiss::ArrayInvertedLists(ivf->nlist, ivf->code_size);
    e->orig_invlists.reset(orig);
    std::vector<uint8_t> codes;
    for (size_t l = 0; l < ivf->nlist; l++) {
        size_t ls = ivf->invlists->list_size(l);
        if (!ls)
            continue;
        faiss::InvertedLists::ScopedCodes packed(ivf->invlists, l);
        faiss::InvertedLists::ScopedIds ids(ivf->invlists, l);
        codes.resize(ls * ivf->code_size);
        unpack_codes(packed.get(), ls, (size_t)ivf->bbs, ivf->M, ivf->M2, ivf->code_size,
                     codes.data());
        orig->add_entries(l, ls, ids.get(), codes.data());
    }
    ivf->orig_invlists = orig;
}

/* Brings e->norms up to the index's vectors: appends those of added vectors,
 * recomputes after anything else. Without memory for them, there are none,
 * and FAISS computes them per search as it always does. */
void sync_norms(fpx_engine *e) {
    sync_orig_codes(e); /* the other copy kept beside the codes */
    const faiss::IndexFlat *f = server_tuning && e->index ? flat_l2(e->index.get()) : nullptr;
    if (!f)
        return;
    size_t have = e->norms.size(), n = (size_t)f->ntotal;
    try {
        if (have > n)
            have = 0;
        e->norms.resize(n);
        faiss::fvec_norms_L2sqr(e->norms.data() + have, f->get_xb() + have * (size_t)f->d,
                                (size_t)f->d, n - have);
    } catch (const std::bad_alloc &) {
        std::vector<float>().swap(e->norms);
    }
}

/* The norms of e's flat L2 index when they are current, or nullptr. */
const float *current_norms(const fpx_engine *e) {
    return e->index && !e->norms.empty() && (idx_t)e->norms.size() == e->index->ntotal
               ? e->norms.data()
               : nullptr;
}

/*
 * idx->search with the threading rule above. With single-threaded BLAS, a
 * flat index's batch is cut into one slice per core, searched in parallel:
 * the BLAS kernel of each slice runs on its own core, where FAISS would
 * otherwise have left all the parallelism to BLAS's thread pool.
 */
/* fn(i0, i1) over `slices` consecutive slices of n rows, each on an OpenMP
 * thread of its own and with one thread for what it calls; an exception is
 * caught in its thread (one escaping an OpenMP region ends the process) and
 * rethrown after the region. */
template <class F> void over_slices(idx_t n, int slices, F fn) {
    int saved = omp_get_max_threads();
    std::string failure;
#pragma omp parallel for num_threads(slices) schedule(static, 1)
    for (int t = 0; t < slices; t++) {
        omp_set_num_threads(1);
        try {
            fn(n * t / slices, n * (t + 1) / slices);
        } catch (const std::exception &ex) {
#pragma omp critical(fpx_slice_failure)
            failure = ex.what();
        }
    }
    omp_set_num_threads(saved);
    if (!failure.empty())
        throw faiss::FaissException(failure);
}

/* fn(list, offset, rows) for each entry of ivf's lists whose id want maps to
 * rows, in list order, until all are found; returns how many were. */
template <class F>
size_t for_each_wanted(const faiss::IndexIVF *ivf,
                       const std::unordered_map<idx_t, std::vector<idx_t>> &want, F fn) {
    size_t found = 0;
    for (size_t l = 0; l < ivf->nlist && found < want.size(); l++) {
        size_t ls = ivf->invlists->list_size(l);
        faiss::InvertedLists::ScopedIds ids(ivf->invlists, l);
        for (size_t o = 0; o < ls; o++) {
            auto it = want.find(ids[o]);
            if (it == want.end())
                continue;
            fn(l, o, it->second);
            found++;
        }
    }
    return found;
}

/* idx->search; a flat L2 index with known norms is searched as FAISS's
 * IndexFlat::search does, handing FAISS the norms. */
/*
 * FAISS 1.7.3's fast-scan searches throw for the combinations they have no
 * kernel for (IndexFastScan: a block of queries with a bbs, such as its own
 * default of 4 queries with bbs 64; IndexIVFFastScan: implementations 12 and
 * 13 with a bbs other than 32), some from inside FAISS's own OpenMP regions,
 * where an exception ends the process. A flat fast-scan search runs with one
 * OpenMP thread per slice of queries, which keeps FAISS out of its region (it
 * slices the queries over threads only when it has two; the server slices
 * them itself, as FAISS would); the IVF combination is refused before the
 * search.
 */
bool search_fast_scan(const Index *idx, idx_t n, const float *x, idx_t k, float *D, idx_t *I,
                      const faiss::SearchParameters *p) {
    const Index *core = idx;
    while (auto pt = dynamic_cast<const faiss::IndexPreTransform *>(core))
        core = pt->index;
    if (auto ivf = dynamic_cast<const faiss::IndexIVFFastScan *>(core)) {
        if ((ivf->implem == 12 || ivf->implem == 13) && ivf->bbs != 32)
            FAISS_THROW_FMT("fast-scan implem %d needs bbs 32 (this index's bbs is %d)",
                            ivf->implem, ivf->bbs);
        return false;
    }
    auto fs = dynamic_cast<const faiss::IndexFastScan *>(core);
    if (!fs)
        return false;
    /* FAISS's kernels 12 to 15 (and implem 0, which picks one of them) cut
     * the batch into one slice per OpenMP thread, and each slice into blocks
     * of qbs queries with a lookup table computed per block: the blocks, and
     * so the last bits of the distances where the BLAS kernels round a
     * product by its shape, follow the slicing. The slices are FAISS's, one
     * per core, each searched with one thread. */
    int slices = 1;
    if (fs->implem == 0 || fs->implem >= 12)
        slices = (int)std::min<idx_t>(std::max(1, omp_get_num_procs()), n);
    over_slices(n, slices, [&](idx_t i0, idx_t i1) {
        idx->search(i1 - i0, x + i0 * idx->d, k, D + i0 * k, I + i0 * k, p);
    });
    return true;
}

void search_once(const Index *idx, const float *norms, idx_t n, const float *x, idx_t k, float *D,
                 idx_t *I, const faiss::SearchParameters *p) {
    const faiss::IndexFlat *f = norms ? flat_l2(idx) : nullptr;
    if (f && !(p && p->sel)) {
        faiss::float_maxheap_array_t res = {(size_t)n, (size_t)k, I, D};
        faiss::knn_L2sqr(x, f->get_xb(), (size_t)f->d, (size_t)n, (size_t)f->ntotal, &res, norms,
                         nullptr);
    } else if (!search_fast_scan(idx, n, x, k, D, I, p)) {
        idx->search(n, x, k, D, I, p);
    }
}

/*
 * A pooled batch below FAISS's BLAS threshold, on a flat index: padded with
 * copies of its last query up to the threshold, so that FAISS computes it as
 * one matrix product. One pass over the vectors for all the queries, where
 * FAISS's query-by-query kernel makes one pass per query; the padding rows
 * cost next to nothing beside that pass. Returns false when not applicable.
 */
bool search_padded(const Index *idx, const float *norms, idx_t n, const float *x, idx_t k, float *D,
                   idx_t *I, const faiss::SearchParameters *p) {
    idx_t blas = faiss::distance_compute_blas_threshold;
    /* With an id selector (deleted vectors) FAISS 1.7.3 scans query by query
     * whatever the count: padding would only add scans. */
    if (n < kPooledBlasMin || n >= blas || (p && p->sel) ||
        !dynamic_cast<const faiss::IndexFlat *>(idx))
        return false;
    size_t d = (size_t)idx->d;
    std::vector<float> xp((size_t)blas * d), dp((size_t)(blas * k));
    std::vector<idx_t> ip((size_t)(blas * k));
    memcpy(xp.data(), x, (size_t)n * d * sizeof(float));
    for (idx_t r = n; r < blas; r++)
        memcpy(&xp[(size_t)r * d], x + (size_t)(n - 1) * d, d * sizeof(float));
    threads_for(1);
    search_once(idx, norms, blas, xp.data(), k, dp.data(), ip.data(), p);
    memcpy(D, dp.data(), (size_t)(n * k) * sizeof(float));
    memcpy(I, ip.data(), (size_t)(n * k) * sizeof(idx_t));
    return true;
}

/* run_search's work, with the threading rule applied by the caller: a flat
 * index's batch in slices of at least FAISS's BLAS threshold, one per core. */
void search_parallel(const Index *idx, const float *norms, idx_t n, const float *x, idx_t k,
                     float *D, idx_t *I, const faiss::SearchParameters *p) {
    int nt = 1;
    if (server_tuning && blas_cuts_exactly && n >= kParallelMin &&
        dynamic_cast<const faiss::IndexFlat *>(idx))
        nt = (int)std::min<idx_t>(omp_get_num_procs(),
                                  n / std::max(1, faiss::distance_compute_blas_threshold));
    if (nt < 2) {
        search_once(idx, norms, n, x, k, D, I, p);
        return;
    }
    over_slices(n, nt, [&](idx_t i0, idx_t i1) {
        search_once(idx, norms, i1 - i0, x + i0 * idx->d, k, D + i0 * k, I + i0 * k, p);
    });
}

bool is_fast_scan(const Index *idx);
faiss::IndexIVF *core_ivf(Index *idx);

/*
 * A search as FAISS's search_and_reconstruct runs it (fpx_search_params.
 * whole_batch): on an IVF index, through its transforms, the coarse
 * quantizer searches the whole batch in one call before the lists are
 * scanned. The scan of the lists is per query: with parallel_mode 0 (where
 * FAISS scans on one thread) it is cut into one slice per core, which gives
 * the same bits. Returns false for the other index types.
 */
bool search_whole_batch(const Index *idx, idx_t n, const float *x, idx_t k, float *D, idx_t *I,
                        const faiss::SearchParameters *p) {
    const faiss::IndexIVF *ivf = core_ivf(const_cast<Index *>(idx));
    if (!ivf || is_fast_scan(ivf))
        return false;
    if (auto pt = dynamic_cast<const faiss::IndexPreTransform *>(idx)) {
        auto pp = dynamic_cast<const faiss::SearchParametersPreTransform *>(p);
        std::unique_ptr<const float[]> xt(pt->apply_chain(n, x));
        return search_whole_batch(pt->index, n, xt.get(), k, D, I, pp ? pp->index_params : p);
    }
    auto ip = dynamic_cast<const faiss::SearchParametersIVF *>(p);
    size_t nprobe = std::min(ivf->nlist, ip ? ip->nprobe : ivf->nprobe);
    FAISS_THROW_IF_NOT_MSG(nprobe > 0, "nprobe must be > 0");
    std::vector<idx_t> lists((size_t)n * nprobe);
    std::vector<float> coarse((size_t)n * nprobe);
    ivf->quantizer->search(n, x, (idx_t)nprobe, coarse.data(), lists.data());
    int slices = 1;
    if ((ivf->parallel_mode & ~ivf->PARALLEL_MODE_NO_HEAP_INIT) == 0)
        slices = (int)std::min<idx_t>(std::max(1, omp_get_max_threads()), n);
    over_slices(n, slices, [&](idx_t i0, idx_t i1) {
        ivf->search_preassigned(i1 - i0, x + i0 * ivf->d, k, lists.data() + i0 * (idx_t)nprobe,
                                coarse.data() + i0 * (idx_t)nprobe, D + i0 * k, I + i0 * k, false,
                                ip);
    });
    return true;
}

void run_search(const Index *idx, const float *norms, idx_t n, const float *x, idx_t k, float *D,
                idx_t *I, const faiss::SearchParameters *p, bool pooled, bool whole) {
    if (pooled && server_tuning && search_padded(idx, norms, n, x, k, D, I, p))
        return;
    in_team(n, [&] {
        if (!whole || !search_whole_batch(idx, n, x, k, D, I, p))
            search_parallel(idx, norms, n, x, k, D, I, p);
    });
}

/* A selector over the server's allowed-position bitset. */
struct BitsetSelector : faiss::IDSelector {
    const fpx_bitset *set;
    explicit BitsetSelector(const fpx_bitset *s) : set(s) {}
    bool is_member(idx_t id) const override {
        return id >= 0 && id < set->nbits && ((set->words[id >> 6] >> (id & 63)) & 1);
    }
};

bool is_fast_scan(const Index *idx) {
    return dynamic_cast<const faiss::IndexIVFFastScan *>(idx) != nullptr;
}

/*
 * Search parameters for idx carrying sel and the knobs, or nullptr when the
 * index type takes no SearchParameters in FAISS 1.7.3 (its search throws if
 * given any). `keep` owns every object built.
 */
faiss::SearchParameters *make_params(const Index *idx, faiss::IDSelector *sel,
                                     const fpx_search_params &kn,
                                     std::vector<std::unique_ptr<faiss::SearchParameters>> &keep) {
    if (auto pt = dynamic_cast<const faiss::IndexPreTransform *>(idx)) {
        faiss::SearchParameters *inner = make_params(pt->index, sel, kn, keep);
        if (!inner)
            return nullptr;
        auto p = std::make_unique<faiss::SearchParametersPreTransform>();
        p->index_params = inner;
        p->sel = sel;
        keep.push_back(std::move(p));
        return keep.back().get();
    }
    if (auto ivf = dynamic_cast<const faiss::IndexIVF *>(idx)) {
        if (is_fast_scan(idx))
            return nullptr;
        auto p = std::make_unique<faiss::SearchParametersIVF>();
        p->nprobe = kn.nprobe > 0 ? (size_t)kn.nprobe : ivf->nprobe;
        p->nprobe = std::min(p->nprobe, ivf->nlist);
        p->max_codes = kn.max_codes > 0   ? (size_t)kn.max_codes
                       : kn.max_codes < 0 ? 0
                                          : ivf->max_codes;
        p->sel = sel;
        if (kn.quantizer_efSearch > 0) { /* knobs_refused: an HNSW quantizer */
            auto q = std::make_unique<faiss::SearchParametersHNSW>();
            q->efSearch = (int)kn.quantizer_efSearch;
            p->quantizer_params = q.get();
            keep.push_back(std::move(q));
        }
        keep.push_back(std::move(p));
        return keep.back().get();
    }
    if (auto h = dynamic_cast<const faiss::IndexHNSW *>(idx)) {
        auto p = std::make_unique<faiss::SearchParametersHNSW>();
        p->efSearch = kn.efSearch > 0 ? (int)kn.efSearch : h->hnsw.efSearch;
        p->sel = sel;
        keep.push_back(std::move(p));
        return keep.back().get();
    }
    if (dynamic_cast<const faiss::IndexFlat *>(idx) ||
        dynamic_cast<const faiss::IndexScalarQuantizer *>(idx)) {
        /* FAISS 1.7.3's flat search refuses a selector with the extra metrics
         * (L1, Linf, ...): the server's own selections (deleted vectors,
         * filters) are then applied by over-fetching; a caller's selector
         * goes to FAISS, which throws as it does for a FAISS program. */
        if (sel && !kn.as_faiss && idx->metric_type != faiss::METRIC_L2 &&
            idx->metric_type != faiss::METRIC_INNER_PRODUCT)
            return nullptr;
        auto p = std::make_unique<faiss::SearchParameters>();
        p->sel = sel;
        keep.push_back(std::move(p));
        return keep.back().get();
    }
    return nullptr;
}

/* Whether the search asks for any knob of its own (binary indexes take none). */
bool per_search_knobs(const fpx_search_params &kn) {
    return kn.nprobe > 0 || kn.efSearch > 0 || kn.max_codes != 0 || kn.quantizer_efSearch > 0 ||
           kn.has_search_type || kn.has_polysemous_ht;
}

/* Why idx cannot take the knobs asked for, or nullptr when it can. */
const char *knobs_refused(const Index *idx, const fpx_search_params &kn) {
    while (auto pt = dynamic_cast<const faiss::IndexPreTransform *>(idx))
        idx = pt->index;
    if (kn.nprobe > 0 && (!dynamic_cast<const faiss::IndexIVF *>(idx) || is_fast_scan(idx)))
        return "nprobe applies to IVF indexes only (not to fast-scan ones)";
    if (kn.max_codes != 0 && (!dynamic_cast<const faiss::IndexIVF *>(idx) || is_fast_scan(idx)))
        return "max_codes applies to IVF indexes only (not to fast-scan ones)";
    if (kn.efSearch > 0 && !dynamic_cast<const faiss::IndexHNSW *>(idx))
        return "efSearch applies to HNSW indexes only";
    if (kn.quantizer_efSearch > 0) {
        auto ivf = dynamic_cast<const faiss::IndexIVF *>(idx);
        if (!ivf || is_fast_scan(idx) || !dynamic_cast<const faiss::IndexHNSW *>(ivf->quantizer))
            return "quantizer_efSearch applies to IVF indexes over an HNSW quantizer only (not "
                   "to fast-scan ones)";
    }
    if ((kn.has_search_type || kn.has_polysemous_ht) && !dynamic_cast<const faiss::IndexPQ *>(idx))
        return "search_type and polysemous_ht apply per search to IndexPQ (\"PQ<M>x<nbits>\") "
               "only";
    return nullptr;
}

float neutral_distance(const Index *idx) {
    return idx->metric_type == faiss::METRIC_INNER_PRODUCT ? -FLT_MAX : FLT_MAX;
}

void fill_missing(const Index *idx, idx_t k, float *D, idx_t *I) {
    for (idx_t j = 0; j < k; j++) {
        D[j] = neutral_distance(idx);
        I[j] = -1;
    }
}

idx_t valid_hits(idx_t k, const idx_t *I) {
    idx_t c = 0;
    for (idx_t j = 0; j < k; j++)
        c += I[j] >= 0;
    return c;
}

int check_nsg_search(const Index *idx, idx_t k, fpx_err *err);

/* The most results a search of idx may ask for: ntotal, or less when an NSG
 * under refinements would be asked for more than it holds (k * k_factor:
 * check_nsg_search), where FAISS 1.7.3's NSG search never returns. */
static idx_t fetch_cap(const Index *idx) {
    fpx_err err;
    idx_t lo = 0, hi = idx->ntotal;
    if (check_nsg_search(idx, hi, &err) == 0)
        return hi;
    while (lo + 1 < hi) { /* lo passes (or is 0), hi does not */
        idx_t mid = lo + (hi - lo) / 2;
        (check_nsg_search(idx, mid, &err) == 0 ? lo : hi) = mid;
    }
    return lo;
}

/*
 * Over-fetch and filter, for index types without selector support: search
 * with k' = k + (positions not allowed), keep the allowed hits in order, and
 * double k' for queries still short until k' covers the whole index.
 */
void search_overfetch(const Index *idx, idx_t n, const float *x, idx_t k, const fpx_bitset *allowed,
                      float *D, idx_t *I) {
    BitsetSelector sel(allowed);
    /* past the cap, search_allowed's exact pass completes what is missing */
    idx_t ntotal = std::max(k, fetch_cap(idx));
    idx_t want = std::min(k, (idx_t)allowed->count);
    idx_t kp = std::min(ntotal, k + (idx->ntotal - (idx_t)allowed->count));
    std::vector<idx_t> rows(n);
    for (idx_t i = 0; i < n; i++)
        rows[i] = i;
    std::vector<float> d2;
    std::vector<idx_t> i2;
    while (!rows.empty()) {
        std::vector<idx_t> still;
        size_t chunk = std::max<size_t>(1, kChunkResults / (size_t)std::max<idx_t>(kp, 1));
        for (size_t c0 = 0; c0 < rows.size(); c0 += chunk) {
            size_t cn = std::min(chunk, rows.size() - c0);
            std::vector<float> xq(cn * (size_t)idx->d);
            for (size_t r = 0; r < cn; r++)
                memcpy(&xq[r * idx->d], x + (size_t)rows[c0 + r] * idx->d,
                       sizeof(float) * (size_t)idx->d);
            d2.resize(cn * (size_t)kp);
            i2.resize(cn * (size_t)kp);
            threads_for((idx_t)cn);
            if (!search_fast_scan(idx, (idx_t)cn, xq.data(), kp, d2.data(), i2.data(), nullptr))
                idx->search((idx_t)cn, xq.data(), kp, d2.data(), i2.data());
            for (size_t r = 0; r < cn; r++) {
                idx_t row = rows[c0 + r];
                float *Dr = D + row * k;
                idx_t *Ir = I + row * k;
                fill_missing(idx, k, Dr, Ir);
                idx_t got = 0;
                for (idx_t j = 0; j < kp && got < k; j++) {
                    idx_t id = i2[r * kp + j];
                    if (id >= 0 && sel.is_member(id)) {
                        Dr[got] = d2[r * kp + j];
                        Ir[got++] = id;
                    }
                }
                if (got < want && kp < ntotal)
                    still.push_back(row);
            }
        }
        rows.swap(still);
        kp = std::min(ntotal, kp * 2);
    }
}

void search_exact(const Index *idx, idx_t n, const float *x, idx_t k, const fpx_bitset *allowed,
                  float *D, idx_t *I);

/* Searches with the allowed set; with `complete`, repeats queries that came
 * back short exhaustively. The exhaustive pass itself runs with complete=0:
 * it is the last word (FAISS can return fewer hits than allowed, e.g. when
 * huge components make every distance infinite), so nothing loops. */
void search_allowed(const Index *idx, idx_t n, const float *x, idx_t k, const fpx_search_params &kn,
                    const fpx_bitset *allowed, int complete, float *D, idx_t *I) {
    BitsetSelector sel(allowed);
    std::vector<std::unique_ptr<faiss::SearchParameters>> keep;
    faiss::SearchParameters *p = make_params(idx, &sel, kn, keep);
    if (!p || !kn.as_faiss)
        not_faiss_counts(kn);
    if (p) {
        run_search(idx, nullptr, n, x, k, D, I, p, false, kn.whole_batch != 0);
    } else {
        search_overfetch(idx, n, x, k, allowed, D, I);
    }
    if (p && kn.as_faiss)
        return; /* FAISS's own answer with the caller's selector, as it is */
    idx_t want = std::min(k, (idx_t)allowed->count);
    for (idx_t i = 0; complete && i < n; i++)
        if (valid_hits(k, I + i * k) < want)
            search_exact(idx, 1, x + i * idx->d, k, allowed, D + i * k, I + i * k);
}

/*
 * An exhaustive search of an IVF index over its decoded vectors, for the IVF
 * types whose search takes no parameters (fast-scan: nprobe cannot be raised
 * per search). Every allowed vector of every list is reconstructed and
 * compared with the queries; distances are those of the decoded vectors.
 */
void search_ivf_decoded(const faiss::IndexIVF *ivf, idx_t n, const float *x, idx_t k,
                        const fpx_bitset *allowed, float *D, idx_t *I) {
    BitsetSelector sel(allowed);
    const bool ip = ivf->metric_type == faiss::METRIC_INNER_PRODUCT;
    const size_t d = (size_t)ivf->d;
    /* per query: (score, id) with smaller = better, trimmed to k now and then */
    std::vector<std::vector<std::pair<float, idx_t>>> best((size_t)n);
    auto trim = [k](std::vector<std::pair<float, idx_t>> &b) {
        if ((idx_t)b.size() > k) {
            std::nth_element(b.begin(), b.begin() + k, b.end());
            b.resize((size_t)k);
        }
    };
    std::vector<float> v(d);
    for (size_t l = 0; l < ivf->nlist; l++) {
        size_t ls = ivf->invlists->list_size(l);
        if (ls == 0)
            continue;
        faiss::InvertedLists::ScopedIds ids(ivf->invlists, l);
        for (size_t o = 0; o < ls; o++) {
            idx_t id = ids[o];
            if (!sel.is_member(id))
                continue;
            ivf->reconstruct_from_offset((int64_t)l, (int64_t)o, v.data());
            for (idx_t q = 0; q < n; q++) {
                const float *xq = x + (size_t)q * d;
                float s = ip ? -faiss::fvec_inner_product(xq, v.data(), d)
                             : faiss::fvec_L2sqr(xq, v.data(), d);
                auto &b = best[(size_t)q];
                b.emplace_back(s, id);
                if ((idx_t)b.size() >= 2 * k + 64)
                    trim(b);
            }
        }
    }
    for (idx_t q = 0; q < n; q++) {
        auto &b = best[(size_t)q];
        trim(b);
        std::sort(b.begin(), b.end());
        fill_missing(ivf, k, D + q * k, I + q * k);
        for (size_t j = 0; j < b.size(); j++) {
            D[q * k + (idx_t)j] = ip ? -b[j].first : b[j].first;
            I[q * k + (idx_t)j] = b[j].second;
        }
    }
}

/* An exhaustive search restricted to the allowed set. */
void search_exact(const Index *idx, idx_t n, const float *x, idx_t k, const fpx_bitset *allowed,
                  float *D, idx_t *I) {
    if (auto pt = dynamic_cast<const faiss::IndexPreTransform *>(idx)) {
        std::unique_ptr<const float[]> xt(pt->apply_chain(n, x));
        search_exact(pt->index, n, xt.get(), k, allowed, D, I);
        return;
    }
    if (auto ivf = dynamic_cast<const faiss::IndexIVF *>(idx)) {
        if (!is_fast_scan(idx)) {
            fpx_search_params all{};
            all.nprobe = (int64_t)ivf->nlist;
            BitsetSelector sel(allowed);
            std::vector<std::unique_ptr<faiss::SearchParameters>> keep;
            faiss::SearchParameters *p = make_params(idx, &sel, all, keep);
            static_cast<faiss::SearchParametersIVF *>(p)->max_codes = 0;
            threads_for(n);
            idx->search(n, x, k, D, I, p);
            return;
        }
        search_ivf_decoded(ivf, n, x, k, allowed, D, I);
        return;
    }
    if (auto r = dynamic_cast<const faiss::IndexRefine *>(idx)) {
        /* The refinement index holds the same positions, usually exactly. */
        search_exact(r->refine_index, n, x, k, allowed, D, I);
        return;
    }
    if (auto h = dynamic_cast<const faiss::IndexHNSW *>(idx)) {
        /* The HNSW storage holds the same positions and searches exhaustively. */
        fpx_search_params none{};
        search_allowed(h->storage, n, x, k, none, allowed, 0, D, I);
        return;
    }
    if (dynamic_cast<const faiss::IndexFlat *>(idx) ||
        dynamic_cast<const faiss::IndexScalarQuantizer *>(idx)) {
        fpx_search_params none{};
        search_allowed(idx, n, x, k, none, allowed, 0, D, I);
        return;
    }
    search_overfetch(idx, n, x, k, allowed, D, I);
}

/* Removes IndexIDMap/IndexIDMap2 wrappers (M2, M: their float or binary
 * types): labels are the server's job, and the wrappers refuse add() without
 * ids and id selectors. */
template <class M2, class M, class Ix> Ix *unwrap_wrappers(Ix *idx) {
    for (;;) {
        Ix *inner;
        if (auto m2 = dynamic_cast<M2 *>(idx)) {
            inner = m2->index;
            m2->own_fields = false;
        } else if (auto m = dynamic_cast<M *>(idx)) {
            inner = m->index;
            m->own_fields = false;
        } else {
            return idx;
        }
        delete idx;
        idx = inner;
    }
}

Index *unwrap_idmap(Index *idx) {
    return unwrap_wrappers<faiss::IndexIDMap2, faiss::IndexIDMap>(idx);
}

/* The IVF index at the core of idx (under pre-transforms), or nullptr. */
faiss::IndexIVF *core_ivf(Index *idx) {
    while (auto pt = dynamic_cast<faiss::IndexPreTransform *>(idx))
        idx = pt->index;
    return dynamic_cast<faiss::IndexIVF *>(idx);
}

/* Selects the positions that are not live. */
struct DeadSelector : faiss::IDSelector {
    const fpx_bitset *live;
    explicit DeadSelector(const fpx_bitset *l) : live(l) {}
    bool is_member(idx_t id) const override {
        return !(id >= 0 && id < live->nbits && ((live->words[id >> 6] >> (id & 63)) & 1));
    }
};

/* An IVF's direct map (none for a null ivf), set aside while the lists'
 * entries change under it: it indexes by id, and FAISS removes nothing from
 * an array map and from a hash table only by an array of ids. restore()
 * builds it again over the lists as they are then. */
template <class IVF> struct MapAside {
    IVF *ivf;
    faiss::DirectMap::Type type;
    explicit MapAside(IVF *i) : ivf(i), type(i ? i->direct_map.type : faiss::DirectMap::NoMap) {
        if (type != faiss::DirectMap::NoMap)
            ivf->set_direct_map_type(faiss::DirectMap::NoMap);
    }
    void restore() {
        if (type != faiss::DirectMap::NoMap)
            ivf->set_direct_map_type(type);
    }
};

template <class IVF> MapAside<IVF> map_aside(IVF *ivf) {
    return MapAside<IVF>(ivf);
}

/* Rewrites the ids stored in an IVF index's lists: id -> map(id), its direct
 * map set aside meanwhile. A fast-scan IVF's BlockInvertedLists cannot update
 * an entry (FAISS 1.7.3 throws): its ids, apart from the packed codes, are
 * rewritten in place. */
template <class IVF, class F> void rewrite_ivf_ids(IVF *ivf, F map) {
    auto aside = map_aside(ivf);
    auto *blocks = dynamic_cast<faiss::BlockInvertedLists *>(ivf->invlists);
    for (size_t l = 0; l < ivf->nlist; l++) {
        size_t ls = ivf->invlists->list_size(l);
        for (size_t o = 0; o < ls; o++) {
            idx_t id = ivf->invlists->get_single_id(l, o), to = map(id);
            if (to == id)
                continue;
            if (blocks) {
                blocks->ids[l][o] = to;
                continue;
            }
            faiss::InvertedLists::ScopedCodes code(ivf->invlists, l, o);
            ivf->invlists->update_entry(l, o, to, code.get());
        }
    }
    aside.restore();
}

/* Removes the ids sel selects from an IVF fast-scan index (under
 * pre-transforms): FAISS 1.7.3's IndexIVF::remove_ids updates entries of
 * its BlockInvertedLists, which throws inside an OpenMP loop, and that ends
 * the process. Each list's codes are unpacked, the kept ones packed again.
 * false (nothing done) for every other index. */
bool remove_from_fast_scan(Index *idx, const faiss::IDSelector &sel) {
    faiss::IndexIVFFastScan *ivf = core_ivf_fast_scan(idx);
    auto lists = ivf ? dynamic_cast<faiss::BlockInvertedLists *>(ivf->invlists) : nullptr;
    if (!lists)
        return false;
    size_t cs = ivf->code_size, bbs = (size_t)ivf->bbs, removed = 0;
    std::vector<uint8_t> codes, kept;
    for (size_t l = 0; l < ivf->nlist; l++) {
        size_t n = lists->list_size(l);
        if (!n)
            continue;
        codes.resize(n * cs);
        unpack_codes(lists->get_codes(l), n, bbs, ivf->M, ivf->M2, cs, codes.data());
        kept.clear();
        std::vector<idx_t> ids;
        for (size_t j = 0; j < n; j++)
            if (!sel.is_member(lists->ids[l][j])) {
                kept.insert(kept.end(), codes.begin() + (ptrdiff_t)(j * cs),
                            codes.begin() + (ptrdiff_t)((j + 1) * cs));
                ids.push_back(lists->ids[l][j]);
            }
        if (ids.size() == n)
            continue;
        removed += n - ids.size();
        lists->resize(l, ids.size());
        pack_codes(kept.data(), ids.size(), bbs, ivf->M, ivf->M2, lists->codes[l]);
        lists->ids[l] = ids;
    }
    for (Index *i = idx; i != ivf; i = static_cast<faiss::IndexPreTransform *>(i)->index)
        i->ntotal -= (idx_t)removed;
    ivf->ntotal -= (idx_t)removed;
    return true;
}

bool remove_from_fast_scan(faiss::IndexBinary *, const faiss::IDSelector &) {
    return false;
}

/* ---- binary indexes ------------------------------------------------------------------ */

using BinIndex = faiss::IndexBinary;

/* Calls f(pos, code) for every stored code of a binary index whose storage is
 * reachable (flat, HNSW's flat storage, IVF lists); false for other types. */
template <class F> bool for_each_code(const BinIndex *b, F f) {
    if (auto fl = dynamic_cast<const faiss::IndexBinaryFlat *>(b)) {
        for (idx_t p = 0; p < fl->ntotal; p++)
            f(p, fl->xb.data() + (size_t)p * fl->code_size);
        return true;
    }
    if (auto h = dynamic_cast<const faiss::IndexBinaryHNSW *>(b))
        return for_each_code(h->storage, f);
    if (auto ivf = dynamic_cast<const faiss::IndexBinaryIVF *>(b)) {
        for (size_t l = 0; l < ivf->nlist; l++) {
            size_t ls = ivf->invlists->list_size(l);
            if (!ls)
                continue;
            faiss::InvertedLists::ScopedIds ids(ivf->invlists, l);
            faiss::InvertedLists::ScopedCodes codes(ivf->invlists, l);
            for (size_t o = 0; o < ls; o++)
                f(ids[o], codes.get() + o * ivf->code_size);
        }
        return true;
    }
    return false;
}

int32_t hamming(const uint8_t *a, const uint8_t *b, size_t n) {
    int32_t d = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x, y;
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        d += __builtin_popcountll(x ^ y);
    }
    for (; i < n; i++)
        d += __builtin_popcount((unsigned)(a[i] ^ b[i]));
    return d;
}

/* Exact k-NN over the allowed codes of a binary index (FAISS's binary
 * searches take no id selector in 1.7.3). Ties go to the smaller position. */
bool binary_exact(const BinIndex *b, idx_t n, const uint8_t *x, idx_t k, const fpx_bitset *allowed,
                  int32_t *D, idx_t *I) {
    BitsetSelector sel(allowed);
    std::vector<std::vector<std::pair<int32_t, idx_t>>> best((size_t)n);
    auto trim = [k](std::vector<std::pair<int32_t, idx_t>> &v) {
        if ((idx_t)v.size() > k) {
            std::nth_element(v.begin(), v.begin() + k, v.end());
            v.resize((size_t)k);
        }
    };
    size_t cs = (size_t)b->code_size;
    bool ok = for_each_code(b, [&](idx_t pos, const uint8_t *code) {
        if (allowed && !sel.is_member(pos))
            return;
        for (idx_t q = 0; q < n; q++) {
            auto &v = best[(size_t)q];
            v.emplace_back(hamming(x + (size_t)q * cs, code, cs), pos);
            if ((idx_t)v.size() >= 2 * k + 64)
                trim(v);
        }
    });
    if (!ok)
        return false;
    for (idx_t q = 0; q < n; q++) {
        auto &v = best[(size_t)q];
        trim(v);
        std::sort(v.begin(), v.end());
        for (idx_t j = 0; j < k; j++) {
            bool has = j < (idx_t)v.size();
            D[q * k + j] = has ? v[(size_t)j].first : INT32_MAX;
            I[q * k + j] = has ? v[(size_t)j].second : -1;
        }
    }
    return true;
}

BinIndex *unwrap_binary_idmap(BinIndex *b) {
    return unwrap_wrappers<faiss::IndexBinaryIDMap2, faiss::IndexBinaryIDMap>(b);
}

/* Index types FAISS 1.7.3's C API constructs but its index_factory cannot
 * name: the scalar quantizers QT_8bit_uniform, QT_4bit_uniform and
 * QT_8bit_direct (alone or as IVF<n>'s lists, with the coarse quantizer and
 * residual encoding the factory gives its own SQ types), and IndexLSH with a
 * number of bits other than d. The names follow the factory's spelling so a
 * description stays one string everywhere (log, snapshot, index_type);
 * nullptr: not one of them, the factory decides. */
Index *build_extension(const char *description, int dim, faiss::MetricType mt) {
    using QT = faiss::ScalarQuantizer::QuantizerType;
    static const struct {
        const char *name;
        QT qt;
    } kSqExtra[] = {{"SQ8_uniform", faiss::ScalarQuantizer::QT_8bit_uniform},
                    {"SQ4_uniform", faiss::ScalarQuantizer::QT_4bit_uniform},
                    {"SQ8_direct", faiss::ScalarQuantizer::QT_8bit_direct}};
    const char *sq = description;
    unsigned long nlist = 0;
    int used = 0;
    if (sscanf(description, "IVF%lu,%n", &nlist, &used) == 1 && used > 0)
        sq = description + used;
    for (const auto &e : kSqExtra) {
        if (strcmp(sq, e.name) != 0)
            continue;
        if (sq == description)
            return new faiss::IndexScalarQuantizer(dim, e.qt, mt);
        std::unique_ptr<faiss::IndexFlat> q(new faiss::IndexFlat(dim, mt));
        auto *ivf = new faiss::IndexIVFScalarQuantizer(q.get(), dim, (size_t)nlist, e.qt, mt, true);
        q.release();
        ivf->own_fields = true;
        return ivf;
    }
    /* LSH<nbits>, then r (rotate the data) and t (train thresholds), as the
     * factory's LSH[r][t] */
    if (!strncmp(description, "LSH", 3) && description[3] >= '1' && description[3] <= '9') {
        char *end;
        long nbits = strtol(description + 3, &end, 10);
        bool rotate = *end == 'r';
        end += rotate;
        bool thresholds = *end == 't';
        end += thresholds;
        if (*end)
            return nullptr;
        FAISS_THROW_IF_NOT_MSG(mt == faiss::METRIC_L2, "IndexLSH is for the L2 metric only");
        return new faiss::IndexLSH(dim, (int)nbits, rotate, thresholds);
    }
    return nullptr;
}

/* ---- inputs FAISS 1.7.3 aborts or hangs on, refused before it runs ---------------------- */

/* FAISS 1.7.3's NSG builds its graph once, on its first add, with NNDescent,
 * which draws its 100 evaluation points by taking a random number modulo
 * (points - 100): on 100 points or fewer it divides by zero (SIGFPE, the
 * whole process). The same holds for an NSG coarse quantizer, built on the
 * nlist centroids when its IVF is trained. */
constexpr idx_t kNsgMinBuild = 101;

/* Calls f(nsg, ivf) for every IndexNSG inside idx (under pre-transforms,
 * refinements, IDMap and min-max wrappers, or as an IVF's coarse quantizer:
 * then ivf is that IVF, else nullptr). */
template <class F> void for_each_nsg(Index *idx, faiss::IndexIVF *ivf, F f) {
    if (!idx)
        return;
    if (auto pt = dynamic_cast<faiss::IndexPreTransform *>(idx))
        return for_each_nsg(pt->index, ivf, f);
    if (auto rf = dynamic_cast<faiss::IndexRefine *>(idx)) {
        for_each_nsg(rf->base_index, ivf, f);
        return for_each_nsg(rf->refine_index, ivf, f);
    }
    if (auto im = dynamic_cast<faiss::IndexIDMap *>(idx))
        return for_each_nsg(im->index, ivf, f);
    if (auto mm = dynamic_cast<faiss::IndexRowwiseMinMaxBase *>(idx))
        return for_each_nsg(mm->index, ivf, f);
    if (auto iv = dynamic_cast<faiss::IndexIVF *>(idx))
        return for_each_nsg(iv->quantizer, iv, f);
    if (auto g = dynamic_cast<faiss::IndexNSG *>(idx))
        f(g, ivf);
}

/* An NSG whose graph keeps at most 2 links per node never finishes its
 * build (its spanning-tree repair looks, forever, for a node with a free
 * link); an NSG quantizer over 100 centroids or fewer divides by zero. */
int check_nsg_created(Index *idx, const char *desc, fpx_err *err) {
    std::string why;
    for_each_nsg(idx, nullptr, [&](faiss::IndexNSG *g, faiss::IndexIVF *ivf) {
        if (!why.empty())
            return;
        char buf[320];
        if (g->nsg.R < 3)
            snprintf(buf, sizeof buf,
                     "index_type \"%s\": NSG needs R >= 3 (got %d): FAISS 1.7.3's NSG build "
                     "never ends with 2 links per node or fewer",
                     desc, g->nsg.R);
        else if (ivf && (idx_t)ivf->nlist < kNsgMinBuild)
            snprintf(buf, sizeof buf,
                     "index_type \"%s\": an NSG coarse quantizer needs nlist >= %lld (got %zu): "
                     "FAISS 1.7.3's NSG build divides by zero on %lld points or fewer",
                     desc, (long long)kNsgMinBuild, ivf->nlist, (long long)kNsgMinBuild - 1);
        else
            return;
        why = buf;
    });
    return why.empty() ? 0 : set_err(err, FPX_E_VALIDATION, "%s", why.c_str());
}

/* The NSG an add of n vectors to idx builds first, when n cannot build it. */
int check_nsg_add(Index *idx, idx_t n, fpx_err *err) {
    bool refused = false, r_small = false;
    for_each_nsg(idx, nullptr, [&](faiss::IndexNSG *g, faiss::IndexIVF *ivf) {
        refused |= !ivf && g->ntotal == 0 && n < kNsgMinBuild;
        r_small |= !ivf && g->ntotal == 0 && g->nsg.R < 3;
    });
    if (r_small)
        return set_err(err, FPX_E_VALIDATION,
                       "an NSG index with R < 3 cannot be built: FAISS 1.7.3's NSG build never "
                       "ends with 2 links per node or fewer");
    if (!refused)
        return 0;
    return set_err(err, FPX_E_VALIDATION,
                   "an NSG index is built by its first add, which needs at least %lld vectors "
                   "(got %lld): FAISS 1.7.3's NSG build divides by zero on fewer",
                   (long long)kNsgMinBuild, (long long)n);
}

/* FAISS 1.7.3's NSG search fills its candidate pool of max(search_L, k)
 * entries with distinct stored vectors, drawing random ones until it is
 * full: asked for more than the index holds, it never returns. k is what
 * the search of idx asks its NSG for (a refinement asks k * k_factor). */
int check_nsg_search(const Index *idx, idx_t k, fpx_err *err) {
    double kk = (double)k;
    for (;;) {
        if (auto pt = dynamic_cast<const faiss::IndexPreTransform *>(idx)) {
            idx = pt->index;
        } else if (auto rf = dynamic_cast<const faiss::IndexRefine *>(idx)) {
            kk = (double)(idx_t)(kk * rf->k_factor);
            idx = rf->base_index;
        } else {
            break;
        }
    }
    auto g = dynamic_cast<const faiss::IndexNSG *>(idx);
    if (!g || g->ntotal == 0 || std::max((double)g->nsg.search_L, kk) <= (double)g->ntotal)
        return 0;
    return set_err(err, FPX_E_VALIDATION,
                   "an NSG index's search asks for at most as many results as it holds (%lld), "
                   "got %.0f: FAISS 1.7.3's NSG search never returns otherwise",
                   (long long)g->ntotal, std::max((double)g->nsg.search_L, kk));
}

/* FAISS 1.7.3's generalized Hamming search of an IndexPQ (ST_generalized_HE)
 * compares its codes 8 bytes at a time and asserts that the code size is a
 * multiple of 8 (the whole process aborts); the other search types refuse
 * what they cannot run with an exception. */
int check_pq_search_type(const Index *idx, fpx_err *err) {
    for (;;) {
        if (auto pt = dynamic_cast<const faiss::IndexPreTransform *>(idx))
            idx = pt->index;
        else if (auto rf = dynamic_cast<const faiss::IndexRefine *>(idx))
            idx = rf->base_index;
        else
            break;
    }
    auto pq = dynamic_cast<const faiss::IndexPQ *>(idx);
    if (!pq || pq->search_type != faiss::IndexPQ::ST_generalized_HE || pq->pq.code_size % 8 == 0)
        return 0;
    return set_err(err, FPX_E_VALIDATION,
                   "search_type 2 (ST_generalized_HE) needs a code size that is a multiple of 8 "
                   "bytes, got %zu: FAISS 1.7.3's generalized Hamming search asserts it and ends "
                   "the process; set another search_type",
                   pq->pq.code_size);
}

/* FAISS 1.7.3's IVF range search runs parallel_mode 0, 1 and 2 only: on
 * another it throws inside its OpenMP region, which terminates the process
 * (its k-nearest search takes 3 as well). A fast-scan IVF refuses every
 * range search before that, with its own message. */
int check_ivf_range_mode(const Index *idx, fpx_err *err) {
    const faiss::IndexIVF *ivf = core_ivf(const_cast<Index *>(idx));
    if (!ivf || dynamic_cast<const faiss::IndexIVFFastScan *>(ivf))
        return 0;
    int pmode = ivf->parallel_mode & ~ivf->PARALLEL_MODE_NO_HEAP_INIT;
    if (pmode >= 0 && pmode <= 2)
        return 0;
    return set_err(err, FPX_E_VALIDATION,
                   "range_search of an IVF index needs parallel_mode 0, 1 or 2 (got %d): FAISS "
                   "1.7.3's IVF range search has no other mode and ends the process; set_params "
                   "parallel_mode 0..2 first (search takes 3)",
                   pmode);
}

/* The list number of an IVF code, read as FAISS's decode_listno reads it. */
uint64_t code_list_number(const faiss::Level1Quantizer &q, const uint8_t *code) {
    uint64_t no = 0;
    int shift = 0;
    for (size_t nl = q.nlist - 1; nl > 0; nl >>= 8, shift += 8)
        no |= (uint64_t)*code++ << shift;
    return no;
}

/* sa_decode of FAISS 1.7.3's IVF scalar quantizer, PQ and additive
 * quantizer indexes (and Index2Layer) reads each code's list number inside
 * an OpenMP region and throws when it is not below nlist: an exception out
 * of an OpenMP region terminates the process. The codes of idx (each
 * `stride` bytes, idx's own code `off` bytes in) are checked first. */
int check_list_numbers(const Index *idx, idx_t n, const uint8_t *codes, size_t stride, size_t off,
                       fpx_err *err) {
    const faiss::Level1Quantizer *q = nullptr;
    if (auto pt = dynamic_cast<const faiss::IndexPreTransform *>(idx))
        return check_list_numbers(pt->index, n, codes, stride, off, err);
    if (auto rf = dynamic_cast<const faiss::IndexRefine *>(idx))
        return check_list_numbers(rf->refine_index, n, codes, stride,
                                  off + rf->base_index->sa_code_size(), err);
    if (auto mm = dynamic_cast<const faiss::IndexRowwiseMinMaxBase *>(idx))
        return check_list_numbers(mm->index, n, codes, stride,
                                  off + mm->sa_code_size() - mm->index->sa_code_size(), err);
    if (dynamic_cast<const faiss::IndexIVFScalarQuantizer *>(idx) ||
        dynamic_cast<const faiss::IndexIVFPQ *>(idx) ||
        dynamic_cast<const faiss::IndexIVFAdditiveQuantizer *>(idx))
        q = static_cast<const faiss::IndexIVF *>(idx);
    else if (auto tl = dynamic_cast<const faiss::Index2Layer *>(idx))
        q = &tl->q1;
    if (!q)
        return 0;
    for (idx_t i = 0; i < n; i++) {
        uint64_t no = code_list_number(*q, codes + (size_t)i * stride + off);
        if (no >= q->nlist)
            return set_err(err, FPX_E_VALIDATION,
                           "code %lld names inverted list %llu; the index has %zu (FAISS 1.7.3's "
                           "sa_decode would abort the process)",
                           (long long)i, (unsigned long long)no, q->nlist);
    }
    return 0;
}

} // namespace

#define FPX_CATCH(err, type)                                                                       \
    catch (const faiss::FaissException &e) {                                                       \
        return set_err(err, type, "%s", faiss_message(e.what()).c_str());                          \
    }                                                                                              \
    catch (const std::bad_alloc &) {                                                               \
        return set_err(err, FPX_E_INTERNAL, "out of memory in FAISS");                             \
    }                                                                                              \
    catch (const std::exception &e) {                                                              \
        return set_err(err, type, "%s", e.what());                                                 \
    }                                                                                              \
    catch (...) {                                                                                  \
        return set_err(err, FPX_E_INTERNAL, "unknown exception in FAISS");                         \
    }

extern "C" {

void fpx_engine_stats_wait_ms(int64_t ms) {
    stats_wait_ms.store(ms);
}

int fpx_engine_tune_for_server(void) {
    server_tuning = true;
    /* OpenBLAS's own call: Debian's FAISS links whichever BLAS the system's
     * alternatives pick, and only OpenBLAS has a thread pool to turn off. */
    auto set = (void (*)(int))dlsym(RTLD_DEFAULT, "openblas_set_num_threads");
    if (set)
        set(1);
    blas_cuts_exactly = product_cuts_exactly();
    return set ? 0 : -1;
}

int fpx_engine_slices_batches(void) {
    return blas_cuts_exactly;
}

/* The server's metrics and FAISS's MetricType numbers, with their protocol
 * names. */
static const struct {
    fpx_metric m;
    faiss::MetricType f;
    const char *name;
} metric_table[] = {
    {FPX_METRIC_L2, faiss::METRIC_L2, "L2"},
    {FPX_METRIC_IP, faiss::METRIC_INNER_PRODUCT, "IP"},
    {FPX_METRIC_HAMMING, faiss::METRIC_L2, "Hamming"},
    {FPX_METRIC_L1, faiss::METRIC_L1, "L1"},
    {FPX_METRIC_LINF, faiss::METRIC_Linf, "Linf"},
    {FPX_METRIC_LP, faiss::METRIC_Lp, "Lp"},
    {FPX_METRIC_CANBERRA, faiss::METRIC_Canberra, "Canberra"},
    {FPX_METRIC_BRAYCURTIS, faiss::METRIC_BrayCurtis, "BrayCurtis"},
    {FPX_METRIC_JENSENSHANNON, faiss::METRIC_JensenShannon, "JensenShannon"},
};

const char *fpx_metric_name(fpx_metric m) {
    for (const auto &t : metric_table)
        if (t.m == m)
            return t.name;
    return "L2";
}

int fpx_metric_parse(const char *name, fpx_metric *out) {
    for (const auto &t : metric_table)
        if (!strcmp(t.name, name)) {
            *out = t.m;
            return 0;
        }
    return -1;
}

/* FAISS's MetricType of a float metric; -1 for one FAISS's float indexes lack. */
static int faiss_metric_of(fpx_metric m) {
    for (const auto &t : metric_table)
        if (t.m == m && m != FPX_METRIC_HAMMING)
            return (int)t.f;
    return -1;
}

/* True for FAISS 1.7.3's metrics past L2 and inner product. */
static bool extra_metric(faiss::MetricType mt) {
    return mt != faiss::METRIC_L2 && mt != faiss::METRIC_INNER_PRODUCT;
}

/* The index whose metric_arg FAISS's search reads for idx (its flat index,
 * an HNSW's flat storage, under pre-transforms), or nullptr when idx is of a
 * type FAISS 1.7.3 computes the extra metrics for nowhere. */
static Index *extra_metric_core(Index *idx) {
    while (auto pt = dynamic_cast<faiss::IndexPreTransform *>(idx))
        idx = pt->index;
    if (auto h = dynamic_cast<faiss::IndexHNSW *>(idx))
        idx = h->storage;
    return dynamic_cast<faiss::IndexFlat *>(idx);
}

int fpx_engine_create(const char *description, int64_t dim, fpx_metric metric, fpx_engine **out,
                      fpx_err *err) {
    return fpx_engine_create_metric(description, dim, metric, 0, out, err);
}

/* FAISS 1.7.3 sizes a linear transform's matrix with an int product of its
 * dimensions (d_out x d_out for a random rotation to more dimensions than
 * it reads: a tight frame, QR-factored in O(d_out^3) on its first train).
 * Past 2^31 the product wraps, and training writes through a matrix too
 * small (the process dies). Refused before: each transform's output within
 * the dimensions served, its matrix at most 2^28 floats (1 GiB), and a
 * rotation's tight frame at most 4096 dimensions (minutes of QR here). */
/* A random rotation from din to dout dimensions (what names it: "RR<d>",
 * an IndexLSH's), as FAISS 1.7.3 builds it: one to more dimensions than it
 * reads QR-factors a dout x dout frame, and its matrix is sized with an int
 * product that wraps past 2^31. */
static int check_random_rotation(const char *what, int64_t din, int64_t dout, fpx_err *err) {
    if (dout > din && dout > 4096)
        return set_err(err, FPX_E_VALIDATION,
                       "%s from %lld to %lld dimensions: one to more dimensions than it reads "
                       "builds a d_out x d_out frame, served up to 4096",
                       what, (long long)din, (long long)dout);
    if (din * dout > ((int64_t)1 << 28))
        return set_err(err, FPX_E_VALIDATION,
                       "%s from %lld to %lld dimensions: a matrix of at most 2^28 entries (1 "
                       "GiB) is served",
                       what, (long long)din, (long long)dout);
    return 0;
}

static int check_transform_chain(const faiss::IndexPreTransform *pt, fpx_err *err) {
    for (const faiss::VectorTransform *vt : pt->chain) {
        int64_t din = vt->d_in, dout = vt->d_out;
        if (dout < 1 || dout > 65536)
            return set_err(err, FPX_E_VALIDATION,
                           "a transform to %lld dimensions: its output must be in 1..65536",
                           (long long)dout);
        if (dynamic_cast<const faiss::RandomRotationMatrix *>(vt) &&
            check_random_rotation("a random rotation", din, dout, err))
            return -1;
        /* OPQ's training rotates in max(d_in, d_out) dimensions and ITQ's in
         * d_out: a square matrix of that side, four more for its work and an
         * SVD of one each of its 50 iterations (at 65536, 80 GB) */
        bool opq = dynamic_cast<const faiss::OPQMatrix *>(vt) != nullptr;
        bool itq = dynamic_cast<const faiss::ITQMatrix *>(vt) ||
                   dynamic_cast<const faiss::ITQTransform *>(vt);
        int64_t side = opq ? (din > dout ? din : dout) : dout;
        if ((opq || itq) && !vt->is_trained && side > 4096)
            return set_err(err, FPX_E_VALIDATION,
                           "an %s rotation of %lld dimensions: its training builds and factors "
                           "square matrices of that side, served up to 4096",
                           opq ? "OPQ" : "ITQ", (long long)side);
        if (din * dout > ((int64_t)1 << 28))
            return set_err(err, FPX_E_VALIDATION,
                           "a %lld x %lld transform matrix: at most 2^28 entries (1 GiB) are "
                           "served",
                           (long long)din, (long long)dout);
    }
    return 0;
}

/* Every transform chain in idx, wherever it stands (under a refinement, an
 * IDMap, as an IVF's quantizer or a graph's storage), and the degree of
 * every graph. read: idx is what FAISS read from untrusted bytes, so an
 * IndexLattice is checked too for parameters a created one could not have
 * (describe.c; a created one was checked in its description): FAISS's
 * reader builds its codec from the bytes' numbers unchecked, which with
 * some of them writes past its buffers. The import's probe process
 * (probe.c) reads the bytes first and stops here, so the server never
 * builds such an index. */
static int check_parts(const Index *idx, bool read, fpx_err *err) {
    if (!idx)
        return 0;
    auto l = read ? dynamic_cast<const faiss::IndexLattice *>(idx) : nullptr;
    if (l) {
        char desc[96];
        snprintf(desc, sizeof desc, "ZnLattice%dx%d_%d", l->nsq, l->zn_sphere_codec.r2,
                 l->scale_nbit);
        return fpx_describe_check_lattice(desc, l->d, err);
    }
    if (auto pt = dynamic_cast<const faiss::IndexPreTransform *>(idx))
        return check_transform_chain(pt, err) || check_parts(pt->index, read, err);
    if (auto m = dynamic_cast<const faiss::IndexIDMap *>(idx))
        return check_parts(m->index, read, err);
    if (auto rf = dynamic_cast<const faiss::IndexRefine *>(idx))
        return check_parts(rf->base_index, read, err) || check_parts(rf->refine_index, read, err);
    if (auto ivf = dynamic_cast<const faiss::IndexIVF *>(idx))
        return check_parts(ivf->quantizer, read, err);
    if (auto h = dynamic_cast<const faiss::IndexHNSW *>(idx)) {
        /* an imported graph's degree (a created one's is checked in its
         * description: describe.c) */
        if (h->hnsw.nb_neighbors(0) > 2 * FPX_MAX_GRAPH_DEGREE)
            return set_err(err, FPX_E_VALIDATION,
                           "an HNSW graph of %d links per vector: M is served up to %d",
                           h->hnsw.nb_neighbors(0), FPX_MAX_GRAPH_DEGREE);
        return check_parts(h->storage, read, err);
    }
    if (auto g = dynamic_cast<const faiss::IndexNSG *>(idx)) {
        if (g->nsg.R > FPX_MAX_GRAPH_DEGREE)
            return set_err(err, FPX_E_VALIDATION,
                           "an NSG graph of %d links per vector: R is served up to %d", g->nsg.R,
                           FPX_MAX_GRAPH_DEGREE);
        return check_parts(g->storage, read, err);
    }
    return 0;
}

/* The IndexLSH parts of idx, wherever they stand: their rotation's size. */
static int check_lsh_parts(const Index *idx, fpx_err *err) {
    if (!idx)
        return 0;
    if (auto l = dynamic_cast<const faiss::IndexLSH *>(idx))
        return check_random_rotation("an IndexLSH's rotation (LSH<nbits>r)", l->d, l->nbits, err);
    if (auto pt = dynamic_cast<const faiss::IndexPreTransform *>(idx))
        return check_lsh_parts(pt->index, err);
    if (auto m = dynamic_cast<const faiss::IndexIDMap *>(idx))
        return check_lsh_parts(m->index, err);
    if (auto rf = dynamic_cast<const faiss::IndexRefine *>(idx))
        return check_lsh_parts(rf->base_index, err) || check_lsh_parts(rf->refine_index, err);
    if (auto ivf = dynamic_cast<const faiss::IndexIVF *>(idx))
        return check_lsh_parts(ivf->quantizer, err);
    return 0;
}

/* FAISS 1.7.3's IndexLSH draws its rotation (the "r" of LSH[<nbits>]r) in
 * its constructor, from the dimension the transforms before it give and its
 * bit count, before anything could check it. build_extension's
 * LSH<nbits>r[t] is the whole description, over dim; the factory's LSHr[t]
 * takes as many bits as it gets dimensions, which its transforms give: the
 * description is built first without the rotation, its IndexLSH parts
 * checked, then the real one built. */
static int check_lsh_rotations(const char *description, int dim, faiss::MetricType mt,
                               fpx_err *err) {
    long nbits = 0;
    int used = 0;
    if (sscanf(description, "LSH%ld%n", &nbits, &used) == 1 && description[used] == 'r')
        return check_random_rotation("an IndexLSH's rotation (LSH<nbits>r)", dim, nbits, err);
    /* the description with the r of every LSH[<nbits>]r dropped */
    std::string plain;
    bool rotated = false;
    for (const char *p = description; *p;) {
        if (strncmp(p, "LSH", 3) != 0) {
            plain += *p++;
            continue;
        }
        const char *q = p + 3;
        while (*q >= '0' && *q <= '9')
            q++;
        plain.append(p, (size_t)(q - p));
        rotated = rotated || *q == 'r';
        p = *q == 'r' ? q + 1 : q;
    }
    if (!rotated)
        return 0;
    std::unique_ptr<Index> idx(build_extension(plain.c_str(), dim, mt));
    if (!idx)
        idx.reset(faiss::index_factory(dim, plain.c_str(), mt));
    return check_lsh_parts(idx.get(), err);
}

int fpx_engine_create_metric(const char *description, int64_t dim, fpx_metric metric,
                             double metric_arg, fpx_engine **out, fpx_err *err) {
    if (dim < 1 || dim > 65536)
        return set_err(err, FPX_E_VALIDATION, "dimension must be in 1..65536, got %lld",
                       (long long)dim);
    if (fpx_describe_check(description, err) || fpx_describe_check_lattice(description, dim, err))
        return -1;
    int fm = faiss_metric_of(metric);
    if (fm < 0)
        return set_err(err, FPX_E_VALIDATION, "the %s metric needs a binary index type",
                       fpx_metric_name(metric));
    if (!std::isfinite(metric_arg))
        return set_err(err, FPX_E_VALIDATION, "metric_arg must be finite");
    try {
        faiss::MetricType mt = (faiss::MetricType)fm;
        if (check_lsh_rotations(description, (int)dim, mt, err))
            return -1;
        Index *raw = build_extension(description, (int)dim, mt);
        if (!raw)
            raw = faiss::index_factory((int)dim, description, mt);
        std::unique_ptr<Index> idx(unwrap_idmap(raw));
        if (check_parts(idx.get(), false, err) || check_nsg_created(idx.get(), description, err))
            return -1;
        if (extra_metric(mt)) {
            Index *core = extra_metric_core(idx.get());
            if (!core)
                return set_err(err, FPX_E_VALIDATION,
                               "the %s metric is served on flat indexes (\"Flat\") and HNSW "
                               "over flat storage (\"HNSW<M>\") only: FAISS 1.7.3 computes it "
                               "nowhere else, and \"%s\" is neither",
                               fpx_metric_name(metric), description);
            core->metric_arg = (float)metric_arg;
        }
        *out = new fpx_engine{std::move(idx), nullptr, {}, {}, {}, {}};
        sync_norms(*out);
        return 0;
    }
    FPX_CATCH(err, FPX_E_VALIDATION)
}

/* FAISS 1.7.3's binary hash indexes take their b-bit keys from the start of
 * each code unchecked: b past the code's d bits reads past it, b past 64
 * shifts a 64-bit word by more than its width (both undefined, and keys
 * unlike the ones a program's own FAISS computed). b of 0 puts every vector
 * under one key, as FAISS does. */
static int check_hash_bits(int d, int nhash, int bits, fpx_err *err) {
    if (bits < 0 || bits > 64 || nhash < 1 || (int64_t)bits * nhash > d)
        return set_err(err, FPX_E_VALIDATION,
                       "a binary hash index takes its keys from the codes: it needs nhash * b "
                       "bits within the dimension (%d) and b in 0..64, got nhash %d, b %d",
                       d, nhash, bits);
    return 0;
}

/* A binary index's parts that FAISS takes unchecked: a hash's bits, and an
 * imported graph's degree (as check_parts for float indexes). */
static int check_binary_parts(const BinIndex *b, fpx_err *err) {
    int bits, nhash = 1;
    if (!b)
        return 0;
    if (auto ivf = dynamic_cast<const faiss::IndexBinaryIVF *>(b))
        return check_binary_parts(ivf->quantizer, err);
    if (auto h = dynamic_cast<const faiss::IndexBinaryHNSW *>(b)) {
        if (h->hnsw.nb_neighbors(0) > 2 * FPX_MAX_GRAPH_DEGREE)
            return set_err(err, FPX_E_VALIDATION,
                           "a binary HNSW graph of %d links per vector: M is served up to %d",
                           h->hnsw.nb_neighbors(0), FPX_MAX_GRAPH_DEGREE);
        return check_binary_parts(h->storage, err);
    }
    if (auto hh = dynamic_cast<const faiss::IndexBinaryHash *>(b)) {
        bits = hh->b;
    } else if (auto mh = dynamic_cast<const faiss::IndexBinaryMultiHash *>(b)) {
        bits = mh->b;
        nhash = mh->nhash;
    } else {
        return 0;
    }
    return check_hash_bits(b->d, nhash, bits, err);
}

int fpx_engine_create_binary(const char *description, int64_t dim, fpx_engine **out, fpx_err *err) {
    if (dim < 8 || dim > 65536 || dim % 8)
        return set_err(err, FPX_E_VALIDATION,
                       "a binary index's dimension is in bits: a multiple of 8 in 8..65536, got "
                       "%lld",
                       (long long)dim);
    if (fpx_describe_check(description, err))
        return -1;
    if (description[0] != 'B')
        return set_err(err, FPX_E_VALIDATION,
                       "binary index types start with B (BFlat, BIVF<n>, BHNSW<M>, ...)");
    /* checked before FAISS makes it: its IndexBinaryMultiHash leaks what it
     * allocated when its own check of nhash * b throws */
    int nhash = 1, bits = 0, used = 0;
    if ((sscanf(description, "BHash%dx%d%n", &nhash, &bits, &used) == 2 ||
         (nhash = 1, sscanf(description, "BHash%d%n", &bits, &used) == 1)) &&
        !description[used] && check_hash_bits((int)dim, nhash, bits, err))
        return -1;
    try {
        std::unique_ptr<BinIndex> b(faiss::index_binary_factory((int)dim, description));
        if (check_binary_parts(b.get(), err))
            return -1;
        *out = new fpx_engine{nullptr, std::move(b), {}, {}, {}, {}};
        return 0;
    }
    FPX_CATCH(err, FPX_E_VALIDATION)
}

} // extern "C"

namespace {

/* Buffers at least this large give their pages back before they are freed. */
constexpr size_t kReleaseMin = (size_t)64 << 20;

/* Gives the whole pages inside buf[0..n) back to the kernel, 16 MB at a
 * time, ahead of the free. Freeing 500 MB in one munmap holds the process's
 * memory map locked for writing while every page is zapped, and every other
 * thread's page fault (a search's fresh buffer, a reply) waits that long;
 * madvise(MADV_DONTNEED) takes that lock for reading only. The pages read as
 * zeros afterwards, and the allocator's own words around the buffer are not
 * in a whole page of it. */
void release_pages(const void *buf, size_t n) {
    if (n < kReleaseMin)
        return;
    long ps = sysconf(_SC_PAGESIZE);
    uintptr_t page = ps > 0 ? (uintptr_t)ps : 4096;
    uintptr_t a = ((uintptr_t)buf + page - 1) & ~(page - 1);
    uintptr_t end = ((uintptr_t)buf + n) & ~(page - 1);
    for (; a < end; a += (uintptr_t)16 << 20) {
        size_t len = std::min((uintptr_t)16 << 20, end - a);
        madvise((void *)a, len, MADV_DONTNEED);
    }
}

/* release_pages for the large buffers of the index types that hold them:
 * flat codes, and the lists of an IVF index. */
void release_index_pages(Index *idx) {
    while (auto pt = dynamic_cast<faiss::IndexPreTransform *>(idx))
        idx = pt->index;
    if (auto fc = dynamic_cast<faiss::IndexFlatCodes *>(idx)) {
        release_pages(fc->codes.data(), fc->codes.size());
    } else if (auto ivf = dynamic_cast<faiss::IndexIVF *>(idx)) {
        if (auto al = dynamic_cast<faiss::ArrayInvertedLists *>(ivf->invlists))
            for (auto &codes : al->codes)
                release_pages(codes.data(), codes.size());
    } else if (auto h = dynamic_cast<faiss::IndexHNSW *>(idx)) {
        if (h->storage)
            release_index_pages(h->storage);
    }
}

} // namespace

extern "C" {

void fpx_engine_free(fpx_engine *e) {
    if (e && e->index)
        release_index_pages(e->index.get());
    else if (e && e->bin)
        if (auto bf = dynamic_cast<faiss::IndexBinaryFlat *>(e->bin.get()))
            release_pages(bf->xb.data(), bf->xb.size());
    delete e;
}

int fpx_engine_is_binary(const fpx_engine *e) {
    return e->bin != nullptr;
}

size_t fpx_engine_row_bytes(const fpx_engine *e) {
    return e->bin ? (size_t)e->bin->code_size : (size_t)e->index->d * sizeof(float);
}

int64_t fpx_engine_dim(const fpx_engine *e) {
    return e->bin ? e->bin->d : e->index->d;
}

int64_t fpx_engine_ntotal(const fpx_engine *e) {
    return e->bin ? e->bin->ntotal : e->index->ntotal;
}

int fpx_engine_is_trained(const fpx_engine *e) {
    return (e->bin ? e->bin->is_trained : e->index->is_trained) ? 1 : 0;
}

fpx_metric fpx_engine_metric(const fpx_engine *e) {
    if (e->bin)
        return FPX_METRIC_HAMMING;
    for (const auto &t : metric_table)
        if (t.f == e->index->metric_type && t.m != FPX_METRIC_HAMMING)
            return t.m;
    return FPX_METRIC_L2; /* fpx_engine_deserialize refuses any other */
}

double fpx_engine_metric_arg(const fpx_engine *e) {
    return e->bin ? 0 : (double)e->index->metric_arg;
}

/* Runs a build call of e (train, add) on the build team, under the
 * statistics' lock when the build searches a quantizer that counts. */
static void in_build(fpx_engine *e, int64_t n, const std::function<void()> &fn) {
    CounterScope counting(nullptr,
                          e->bin ? build_counts(e->bin.get()) : build_counts(e->index.get()));
    in_team(n, fn, Work::build);
}

/* FAISS 1.7.3 trains the norms of an additive quantizer searched with
 * _Ncqint8 / _Ncqint4 by a 1-D k-means of 256 (16) centroids that reads
 * past its data (SIGSEGV, the whole process) when the quantized norms have
 * fewer distinct values than centroids. Those norms exist only inside its
 * training, so no bound on the input tells the two apart: such an index is
 * never trained here (one trained by local FAISS and imported is served). */
static int check_cq_norms_train(const Index *idx, fpx_err *err) {
    std::vector<faiss::AdditiveQuantizer *> aqs;
    additive_quantizers(idx, aqs);
    for (auto aq : aqs)
        if (!aq->is_trained && (aq->search_type == faiss::AdditiveQuantizer::ST_norm_cqint8 ||
                                aq->search_type == faiss::AdditiveQuantizer::ST_norm_cqint4))
            return set_err(err, FPX_E_UNSUPPORTED,
                           "training an additive quantizer with _Ncqint8 / _Ncqint4 norms is not "
                           "served: FAISS 1.7.3's norm training crashes the process on some "
                           "training sets; train it with local faiss and import it, or use "
                           "_Nqint8, _Nqint4 or _Nfloat");
    return 0;
}

static fpx_isolated_add_fn isolated_add;

/* The index of bytes w (the serialization of idx) after an add of n vectors,
 * made by isolated_add and read back (under no IDMap), or nullptr with err. */
static std::unique_ptr<Index> build_isolated(const faiss::VectorIOWriter &w, const Index *idx,
                                             idx_t n, const void *x, fpx_err *err) {
    uint8_t *out = nullptr;
    size_t out_len = 0;
    if (isolated_add(w.data.data(), w.data.size(), n, idx->d, x, &out, &out_len, err))
        return nullptr;
    std::unique_ptr<uint8_t, decltype(&free)> held(out, free);
    std::unique_ptr<Index> built;
    try {
        BufReader r(out, out_len);
        built.reset(unwrap_idmap(read_float(&r)));
    } catch (const std::exception &ex) {
        set_err(err, FPX_E_INTERNAL, "cannot read back the index the NSG build made: %s",
                ex.what());
        return nullptr;
    }
    if (built->d != idx->d || built->ntotal != idx->ntotal + n) {
        set_err(err, FPX_E_INTERNAL,
                "the NSG build gave back another index (d=%d, %lld vectors, expected %lld)",
                (int)built->d, (long long)built->ntotal, (long long)(idx->ntotal + n));
        return nullptr;
    }
    return built;
}

/* A refusal of isolated_add, carried out of FAISS's train as it came. */
struct IsolatedError : std::exception {
    fpx_err err;
    explicit IsolatedError(const fpx_err &e) : err(e) {}
    const char *what() const noexcept override {
        return err.msg;
    }
};

/* An NSG coarse quantizer whose graph builds run in isolated_add's process:
 * its IVF's train builds it on the centroids (once, or at every k-means
 * iteration when the quantizer assigns for the clustering), where FAISS
 * 1.7.3's build never ends or asserts on some of them. It stands in for the
 * quantizer during a train only (QuantizerSwap). */
struct IsolatedNSG : faiss::IndexNSGFlat {
    explicit IsolatedNSG(const faiss::IndexNSGFlat &o) : faiss::IndexNSGFlat(o) {}
    void add(idx_t n, const float *x) override {
        faiss::VectorIOWriter w;
        faiss::write_index(this, &w);
        fpx_err e = {};
        std::unique_ptr<Index> read = build_isolated(w, this, n, x, &e);
        auto built = dynamic_cast<faiss::IndexNSGFlat *>(read.get());
        if (!read)
            throw IsolatedError(e);
        if (!built)
            FAISS_THROW_MSG("the NSG build gave back another index");
        std::swap(storage, built->storage); /* each deletes what it holds */
        nsg = built->nsg;
        ntotal = built->ntotal;
        is_built = built->is_built;
    }
};

/* Puts IsolatedNSG in place of every unbuilt IndexNSGFlat quantizer of idx
 * for the life of the object, and the plain class back after. */
struct QuantizerSwap {
    std::vector<faiss::IndexIVF *> ivfs;
    explicit QuantizerSwap(Index *idx) {
        if (!isolated_add)
            return;
        for_each_nsg(idx, nullptr, [&](faiss::IndexNSG *g, faiss::IndexIVF *ivf) {
            auto flat = dynamic_cast<faiss::IndexNSGFlat *>(g);
            if (!ivf || !ivf->own_fields || !flat || typeid(*flat) != typeid(faiss::IndexNSGFlat) ||
                flat->ntotal)
                return;
            put(ivf, flat, new IsolatedNSG(*flat));
            ivfs.push_back(ivf);
        });
    }
    /* ivf's quantizer q replaced by t, a copy of it: the storage they share
     * is then t's alone */
    static void put(faiss::IndexIVF *ivf, faiss::IndexNSGFlat *q, faiss::IndexNSGFlat *t) {
        q->own_fields = false;
        delete q;
        ivf->quantizer = t;
    }
    ~QuantizerSwap() {
        for (auto ivf : ivfs) {
            auto q = static_cast<faiss::IndexNSGFlat *>(ivf->quantizer);
            put(ivf, q, new faiss::IndexNSGFlat(*q));
        }
    }
};

int fpx_engine_train(fpx_engine *e, int64_t n, const void *x, fpx_err *err) {
    if (n < 1)
        return set_err(err, FPX_E_VALIDATION, "train needs at least one vector");
    /* an imported index's NSG quantizer is held to create_index's bounds */
    if (!e->bin && check_nsg_created(e->index.get(), "(this index)", err))
        return -1;
    if (!e->bin && check_cq_norms_train(e->index.get(), err))
        return -1;
    try {
        QuantizerSwap isolated(e->bin ? nullptr : e->index.get());
        in_build(e, n, [&] {
            if (e->bin)
                e->bin->train(n, (const uint8_t *)x);
            else
                e->index->train(n, (const float *)x);
        });
        return 0;
    } catch (const IsolatedError &ie) {
        *err = ie.err;
        return -1;
    }
    FPX_CATCH(err, FPX_E_FAISS)
}

static void serialize_into(const fpx_engine *e, faiss::VectorIOWriter &w);
static void copy_train_params(Index *d, const Index *s);

void fpx_engine_set_isolated_add(fpx_isolated_add_fn fn) {
    isolated_add = fn;
}

/* Whether an add to idx builds an NSG graph (an NSG's first add; an NSG
 * coarse quantizer is built by its IVF's train). */
static bool builds_nsg_graph(Index *idx) {
    bool builds = false;
    for_each_nsg(idx, nullptr, [&](faiss::IndexNSG *g, faiss::IndexIVF *ivf) {
        builds |= !ivf && g->ntotal == 0 && !g->is_built;
    });
    return builds;
}

/* The add of n vectors to e, run by isolated_add; e takes the index it
 * gives back, with the settings FAISS's bytes leave out (as a trained
 * index's record takes them, apply.c). */
static int add_isolated(fpx_engine *e, int64_t n, const void *x, fpx_err *err) {
    faiss::VectorIOWriter w;
    try {
        serialize_into(e, w);
    }
    FPX_CATCH(err, FPX_E_FAISS)
    std::unique_ptr<Index> built = build_isolated(w, e->index.get(), n, x, err);
    if (!built)
        return -1;
    fpx_engine next{std::move(built), nullptr, {}, {}, {}, {}};
    copy_train_params(next.index.get(), e->index.get());
    fpx_engine_copy_members(&next, e);
    e->index.swap(next.index);
    sync_norms(e);
    return 0;
}

static bool plain_flat(const faiss::Index *idx) {
    return idx && (typeid(*idx) == typeid(faiss::IndexFlat) ||
                   typeid(*idx) == typeid(faiss::IndexFlatL2) ||
                   typeid(*idx) == typeid(faiss::IndexFlatIP));
}

/* A plain flat index (IndexFlat, IndexFlatL2, IndexFlatIP exactly, its own
 * top level): FAISS's add resizes the codes, which first zero-fills the new
 * bytes, then copies the vectors over them. Appending the bytes in one
 * pass gives the same codes, and spares the write path a pass over every
 * vector it ingests (bench/README.md, figure 8); nothing to run on the build
 * team either. */
static bool append_flat(fpx_engine *e, int64_t n, const void *x) {
    faiss::Index *idx = e->index.get();
    if (!plain_flat(idx))
        return false;
    auto *f = static_cast<faiss::IndexFlat *>(idx);
    const uint8_t *b = static_cast<const uint8_t *>(x);
    f->codes.insert(f->codes.end(), b, b + (size_t)n * f->code_size);
    f->ntotal += n;
    return true;
}

int fpx_engine_adds_by_copy(const fpx_engine *e) {
    if (e->bin)
        return typeid(*e->bin) == typeid(faiss::IndexBinaryFlat);
    return plain_flat(e->index.get());
}

/* FAISS 1.7.3's IndexIVF::add (no ids) with a hash-table direct map files
 * each entry under a base id it never sets (DirectMapAdd reads ntotal for an
 * array map only): the new vectors land under ids no reconstruct asks for,
 * or over other vectors' entries. Given their positions as ids, the ids add
 * gives them, they are filed right. False for every other index. */
static bool add_hashed(fpx_engine *e, int64_t n, const float *x) {
    faiss::IndexIVF *ivf = core_ivf(e->index.get());
    if (!ivf || ivf->direct_map.type != faiss::DirectMap::Hashtable)
        return false;
    std::vector<idx_t> ids((size_t)n);
    for (int64_t i = 0; i < n; i++)
        ids[(size_t)i] = e->index->ntotal + i;
    e->index->add_with_ids(n, x, ids.data());
    return true;
}

int fpx_engine_add(fpx_engine *e, int64_t n, const void *x, fpx_err *err) {
    if (n == 0)
        return 0;
    if (!fpx_engine_is_trained(e))
        return set_err(err, FPX_E_NOT_TRAINED, "the index must be trained before adding vectors");
    if (!e->bin && check_nsg_add(e->index.get(), n, err))
        return -1;
    if (isolated_add && !e->bin && builds_nsg_graph(e->index.get()))
        return add_isolated(e, n, x, err);
    try {
        if (!append_flat(e, n, x))
            in_build(e, n, [&] {
                if (e->bin)
                    e->bin->add(n, (const uint8_t *)x);
                else if (!add_hashed(e, n, (const float *)x))
                    e->index->add(n, (const float *)x);
            });
        sync_norms(e);
        return 0;
    }
    FPX_CATCH(err, FPX_E_FAISS)
}

/* Search of a binary index: FAISS's own search, or an exact scan of the
 * allowed codes (binary searches take no id selector in FAISS 1.7.3). */
static int binary_search(fpx_engine *e, int64_t n, const uint8_t *x, int64_t k,
                         const fpx_search_params &kn, const fpx_bitset *allowed, int32_t *D,
                         int64_t *I, fpx_err *err) {
    if (per_search_knobs(kn))
        return set_err(err, FPX_E_UNSUPPORTED,
                       "binary indexes take nprobe/efSearch through set_params, not per search");
    try {
        threads_for(n);
        if (!allowed) {
            e->bin->search(n, x, k, D, I);
            return 0;
        }
        not_faiss_counts(kn);
        if (!binary_exact(e->bin.get(), n, x, k, allowed, D, I))
            return set_err(err, FPX_E_UNSUPPORTED,
                           "this binary index type cannot search with deleted vectors or filters");
        return 0;
    }
    FPX_CATCH(err, FPX_E_FAISS)
}

static int search_float(fpx_engine *e, int64_t n, const float *x, int64_t k,
                        const fpx_search_params &kn, const fpx_bitset *allowed, float *D,
                        int64_t *I, fpx_err *err);

/* The index of type T under idx's transforms, or nullptr. */
extern "C++" template <class T> T *under_transforms(Index *idx) {
    while (auto pt = dynamic_cast<faiss::IndexPreTransform *>(idx))
        idx = pt->index;
    return dynamic_cast<T *>(idx);
}

/* A member of a FAISS index set to a search's own value for one call, and
 * given back its value when the call ends (the caller holds e->knobs
 * exclusively meanwhile). */
extern "C++" template <class T> struct set_for_call {
    T &member;
    const T saved;
    set_for_call(T &m, T value) : member(m), saved(m) {
        m = value;
    }
    ~set_for_call() {
        member = saved;
    }
    set_for_call(const set_for_call &) = delete;
    set_for_call &operator=(const set_for_call &) = delete;
};

int fpx_engine_search(fpx_engine *e, int64_t n, const void *xv, int64_t k,
                      const fpx_search_params *params, const fpx_bitset *allowed, void *Dv,
                      int64_t *I, fpx_err *err) {
    fpx_search_params kn = params ? *params : fpx_search_params{};
    CounterScope counting(kn.stats);
    if (n == 0)
        return 0;
    if (e->bin)
        return binary_search(e, n, (const uint8_t *)xv, k, kn, allowed, (int32_t *)Dv, I, err);
    if (faiss::IndexPQ *pq = under_transforms<faiss::IndexPQ>(e->index.get())) {
        if (!kn.has_search_type && !kn.has_polysemous_ht) {
            std::shared_lock<std::shared_mutex> lk(e->knobs);
            return search_float(e, n, (const float *)xv, k, kn, allowed, (float *)Dv, I, err);
        }
        /* FAISS's SearchParametersPQ replaces both members for its search,
         * and IndexPQ's search reads nothing else of them: they are set for
         * this call, as an HNSW's efSearch is below. */
        std::unique_lock<std::shared_mutex> lk(e->knobs);
        set_for_call<faiss::IndexPQ::Search_type_t> st(
            pq->search_type,
            kn.has_search_type ? (faiss::IndexPQ::Search_type_t)kn.search_type : pq->search_type);
        set_for_call<int> ht(pq->polysemous_ht,
                             kn.has_polysemous_ht ? (int)kn.polysemous_ht : pq->polysemous_ht);
        return search_float(e, n, (const float *)xv, k, kn, allowed, (float *)Dv, I, err);
    }
    faiss::IndexHNSW *h = under_transforms<faiss::IndexHNSW>(e->index.get());
    if (!h)
        return search_float(e, n, (const float *)xv, k, kn, allowed, (float *)Dv, I, err);
    /* FAISS 1.7.3's HNSW sizes its candidate queue by the index's efSearch and only
     * then runs with the search's: a caller's selector search gets exactly that. */
    if (kn.efSearch <= 0 || kn.efSearch == h->hnsw.efSearch || kn.as_faiss) {
        std::shared_lock<std::shared_mutex> lk(e->knobs);
        return search_float(e, n, (const float *)xv, k, kn, allowed, (float *)Dv, I, err);
    }
    std::unique_lock<std::shared_mutex> lk(e->knobs);
    not_faiss_counts(kn); /* FAISS sizes its queue by the index's efSearch (above) */
    set_for_call<int> ef(h->hnsw.efSearch, (int)kn.efSearch);
    return search_float(e, n, (const float *)xv, k, kn, allowed, (float *)Dv, I, err);
}

static int search_float(fpx_engine *e, int64_t n, const float *x, int64_t k,
                        const fpx_search_params &kn, const fpx_bitset *allowed, float *D,
                        int64_t *I, fpx_err *err) {
    if (k < 1)
        return set_err(err, FPX_E_VALIDATION, "k must be >= 1");
    const Index *idx = e->index.get();
    try {
        if (!idx->is_trained)
            return set_err(err, FPX_E_NOT_TRAINED, "the index must be trained before searching");
        if (idx->ntotal == 0) {
            not_faiss_counts(kn);
            for (int64_t i = 0; i < n; i++)
                fill_missing(idx, k, D + i * k, I + i * k);
            return 0;
        }
        if (const char *why = knobs_refused(idx, kn))
            return set_err(err, FPX_E_UNSUPPORTED, "%s", why);
        if (check_nsg_search(idx, k, err) || check_pq_search_type(idx, err))
            return -1;
        if (allowed) {
            search_allowed(idx, n, x, k, kn, allowed, !kn.uncompleted, D, I);
            return 0;
        }
        std::vector<std::unique_ptr<faiss::SearchParameters>> keep;
        faiss::SearchParameters *p = make_params(idx, nullptr, kn, keep);
        run_search(idx, current_norms(e), n, x, k, D, I, p, kn.pooled != 0, kn.whole_batch != 0);
        return 0;
    }
    FPX_CATCH(err, FPX_E_FAISS)
}

int fpx_engine_range_search(fpx_engine *e, int64_t n, const void *x, float radius,
                            const fpx_search_params *params, const fpx_bitset *allowed,
                            int64_t **lims, float **D, int64_t **I, fpx_err *err) {
    *lims = nullptr;
    *D = nullptr;
    *I = nullptr;
    fpx_search_params kn = params ? *params : fpx_search_params{};
    const Index *idx = e->index.get();
    CounterScope counting(kn.stats);
    try {
        BitsetSelector sel(allowed);
        faiss::RangeSearchResult res((idx_t)n);
        threads_for(n);
        if (e->bin) {
            if (per_search_knobs(kn))
                return set_err(err, FPX_E_UNSUPPORTED,
                               "binary indexes take nprobe/efSearch through set_params");
            if (allowed)
                not_faiss_counts(kn); /* filtered after FAISS's search, below */
            e->bin->range_search(n, (const uint8_t *)x, (int)radius, &res);
        } else {
            if (const char *why = knobs_refused(idx, kn))
                return set_err(err, FPX_E_UNSUPPORTED, "%s", why);
            if (check_ivf_range_mode(idx, err))
                return -1;
            std::vector<std::unique_ptr<faiss::SearchParameters>> keep;
            faiss::SearchParameters *p = make_params(idx, allowed ? &sel : nullptr, kn, keep);
            if (allowed && !(p && kn.as_faiss))
                not_faiss_counts(kn);
            idx->range_search(n, (const float *)x, radius, &res, p);
        }
        /* Selector-less types get the allowed set applied here. */
        size_t total = 0;
        std::vector<int64_t> l((size_t)n + 1, 0);
        for (idx_t q = 0; q < n; q++) {
            for (size_t j = res.lims[q]; j < res.lims[q + 1]; j++)
                total += !allowed || sel.is_member(res.labels[j]);
            l[(size_t)q + 1] = (int64_t)total;
        }
        int64_t *lo = (int64_t *)malloc(sizeof(int64_t) * ((size_t)n + 1));
        float *Do = (float *)malloc(sizeof(float) * (total ? total : 1));
        int64_t *Io = (int64_t *)malloc(sizeof(int64_t) * (total ? total : 1));
        if (!lo || !Do || !Io) {
            free(lo);
            free(Do);
            free(Io);
            return set_err(err, FPX_E_INTERNAL, "out of memory for range search results");
        }
        memcpy(lo, l.data(), sizeof(int64_t) * ((size_t)n + 1));
        size_t t = 0;
        for (size_t j = 0; j < res.lims[n]; j++) {
            if (allowed && !sel.is_member(res.labels[j]))
                continue;
            Do[t] = res.distances[j];
            Io[t++] = res.labels[j];
        }
        *lims = lo;
        *D = Do;
        *I = Io;
        return 0;
    }
    FPX_CATCH(err, FPX_E_FAISS)
}

int fpx_engine_reconstruct(const fpx_engine *e, int64_t pos, void *out, fpx_err *err) {
    try {
        if (e->bin)
            e->bin->reconstruct(pos, (uint8_t *)out);
        else
            e->index->reconstruct(pos, (float *)out);
        return 0;
    }
    FPX_CATCH(err, FPX_E_FAISS)
}

/* fpx_engine_reconstruct_hits's work on idx, as FAISS 1.7.3's
 * search_and_reconstruct does it: IndexPreTransform's takes all the rows back
 * through its chain in one call; IndexIVF's reconstructs each hit from its
 * list and offset; the other types' (Index's default) each hit by reconstruct,
 * a missing one filled with 0xFF bytes. */
void reconstruct_hits(const Index *idx, idx_t n, const idx_t *pos, float *out) {
    if (auto pt = dynamic_cast<const faiss::IndexPreTransform *>(idx)) {
        if (pt->chain.empty()) {
            reconstruct_hits(pt->index, n, pos, out);
            return;
        }
        std::vector<float> inner((size_t)n * (size_t)pt->index->d);
        reconstruct_hits(pt->index, n, pos, inner.data());
        pt->reverse_chain(n, inner.data(), out);
        return;
    }
    const size_t d = (size_t)idx->d;
    auto ivf = dynamic_cast<const faiss::IndexIVF *>(idx);
    std::unordered_map<idx_t, std::vector<idx_t>> want; /* IVF: position -> rows */
    for (idx_t i = 0; i < n; i++) {
        if (pos[i] < 0)
            memset(out + (size_t)i * d, -1, sizeof(float) * d);
        else if (ivf)
            want[pos[i]].push_back(i);
        else
            idx->reconstruct(pos[i], out + (size_t)i * d);
    }
    if (!ivf)
        return;
    size_t found = for_each_wanted(ivf, want, [&](size_t l, size_t o, const auto &rows) {
        float *first = out + (size_t)rows[0] * d;
        ivf->reconstruct_from_offset((int64_t)l, (int64_t)o, first);
        for (size_t j = 1; j < rows.size(); j++)
            memcpy(out + (size_t)rows[j] * d, first, sizeof(float) * d);
    });
    FAISS_THROW_IF_NOT_MSG(found == want.size(), "some positions are not in the index");
}

int fpx_engine_reconstruct_hits(const fpx_engine *e, int64_t n, const int64_t *pos, void *out,
                                fpx_err *err) {
    if (e->bin)
        return set_err(err, FPX_E_UNSUPPORTED, "reconstruct is served on float indexes only");
    try {
        if (is_fast_scan(core_ivf(e->index.get())))
            return set_err(err, FPX_E_UNSUPPORTED,
                           "FAISS 1.7.3's search_and_reconstruct has no list scanner for IVF "
                           "fast-scan indexes (it reads a null one): search, then reconstruct_n");
        reconstruct_hits(e->index.get(), (idx_t)n, pos, (float *)out);
        return 0;
    }
    FPX_CATCH(err, FPX_E_FAISS)
}

int fpx_engine_reconstruct_batch(const fpx_engine *e, int64_t n, const int64_t *pos, void *outv,
                                 fpx_err *err) {
    if (e->bin) {
        /* one pass over the stored codes (binary IVF needs no direct map) */
        size_t cs = (size_t)e->bin->code_size;
        std::unordered_map<idx_t, std::vector<int64_t>> want;
        for (int64_t i = 0; i < n; i++)
            want[pos[i]].push_back(i);
        size_t found = 0;
        uint8_t *out = (uint8_t *)outv;
        try {
            bool ok = for_each_code(e->bin.get(), [&](idx_t p, const uint8_t *code) {
                auto it = want.find(p);
                if (it == want.end())
                    return;
                found++;
                for (int64_t i : it->second)
                    memcpy(out + (size_t)i * cs, code, cs);
            });
            if (!ok) {
                for (int64_t i = 0; i < n; i++)
                    e->bin->reconstruct(pos[i], out + (size_t)i * cs);
                return 0;
            }
        }
        FPX_CATCH(err, FPX_E_FAISS)
        if (found < want.size())
            return set_err(err, FPX_E_NOT_FOUND, "some positions are not in the index");
        return 0;
    }
    try {
        /* FAISS's reconstruct_n: an IVF from its lists, without a direct map;
         * the rows back through the pre-transforms all at once */
        reconstruct_hits(e->index.get(), (idx_t)n, pos, (float *)outv);
        return 0;
    }
    FPX_CATCH(err, FPX_E_FAISS)
}

int fpx_engine_check_remove(fpx_engine *e, fpx_err *err) {
    try {
        /* Removing nothing takes FAISS's own path, errors included. An
         * array of ids is what FAISS's Python remove_ids passes an IVF with a
         * hash-table direct map (which takes no other selector). */
        faiss::IDSelectorArray none(0, nullptr);
        if (e->bin)
            e->bin->remove_ids(none);
        else
            e->index->remove_ids(none);
        return 0;
    }
    FPX_CATCH(err, FPX_E_FAISS)
}

int fpx_engine_remove_renumbers(const fpx_engine *e) {
    if (e->bin)
        return dynamic_cast<const faiss::IndexBinaryFlat *>(e->bin.get()) != nullptr;
    const Index *idx = e->index.get();
    while (auto pt = dynamic_cast<const faiss::IndexPreTransform *>(idx))
        idx = pt->index;
    return dynamic_cast<const faiss::IndexFlatCodes *>(idx) != nullptr;
}

/* FAISS's reader makes an IndexFlatL2 or IndexFlatIP of every flat index (one
 * serialization for the three), where the factory makes an IndexFlat: a flat
 * index read back from an export takes the class of the flat it merges into
 * (under the same pre-transforms), so that merge_from's same-type check
 * compares the classes the programs made. */
static void match_flat_class(Index *t, std::unique_ptr<Index> &o) {
    Index *oi = o.get();
    Index **slot = nullptr;
    while (auto tp = dynamic_cast<faiss::IndexPreTransform *>(t)) {
        auto op = dynamic_cast<faiss::IndexPreTransform *>(oi);
        if (!op)
            return;
        t = tp->index;
        slot = &op->index;
        oi = op->index;
    }
    auto tf = dynamic_cast<faiss::IndexFlat *>(t);
    auto of = dynamic_cast<faiss::IndexFlat *>(oi);
    if (!tf || !of || typeid(*tf) == typeid(*of) || tf->metric_type != of->metric_type ||
        tf->d != of->d)
        return;
    faiss::IndexFlat *f;
    if (dynamic_cast<faiss::IndexFlatL2 *>(t))
        f = new faiss::IndexFlatL2(of->d);
    else if (dynamic_cast<faiss::IndexFlatIP *>(t))
        f = new faiss::IndexFlatIP(of->d);
    else if (typeid(*t) == typeid(faiss::IndexFlat))
        f = new faiss::IndexFlat(of->d, of->metric_type);
    else
        return;
    f->metric_arg = of->metric_arg;
    f->codes.swap(of->codes);
    f->ntotal = of->ntotal;
    if (slot) { /* the pre-transform owns its index */
        delete *slot;
        *slot = f;
    } else {
        o.reset(f);
    }
}

/* FAISS 1.7.3's IVF fast-scan lists (BlockInvertedLists) take entries only
 * into an empty list: its merge_from appends the other's lists inside an
 * OpenMP loop, where that refusal terminates the process. Plain adds grow
 * the lists their own way and are not concerned. */
static int check_fast_scan_merge(Index *t, Index *o, fpx_err *err) {
    auto tf = dynamic_cast<faiss::IndexIVFFastScan *>(core_ivf(t));
    auto of = dynamic_cast<faiss::IndexIVFFastScan *>(core_ivf(o));
    if (!tf || !of)
        return 0;
    for (size_t l = 0; l < tf->nlist && l < of->nlist; l++) {
        size_t a = tf->invlists->list_size(l), b = of->invlists->list_size(l);
        if (a && b)
            return set_err(err, FPX_E_VALIDATION,
                           "merge_from of IVF fast-scan indexes needs each inverted list to be "
                           "empty in one of the two, got list %zu with %zu vectors here and %zu "
                           "in the other: FAISS 1.7.3's fast-scan lists cannot append in a "
                           "merge, which ends the process",
                           l, a, b);
    }
    return 0;
}

/* Up to n of o's own codes in the form of its sa_decode (input space, past
 * its pre-transforms): flat codes as held, an IVF's list entries after their
 * list number. None for types whose held codes are not in that form (IVF
 * fast scan packs its lists in blocks). */
static size_t held_codes(Index *o, size_t n, std::vector<uint8_t> &codes) {
    Index *core = o;
    while (auto pt = dynamic_cast<faiss::IndexPreTransform *>(core))
        core = pt->index;
    size_t cs = o->sa_code_size(), m = 0;
    if (auto fc = dynamic_cast<faiss::IndexFlatCodes *>(core)) {
        m = std::min(n, (size_t)fc->ntotal);
        if (fc->code_size != cs)
            return 0;
        codes.assign(fc->codes.begin(), fc->codes.begin() + (ptrdiff_t)(m * cs));
        return m;
    }
    auto ivf = dynamic_cast<faiss::IndexIVF *>(core);
    if (!ivf || dynamic_cast<faiss::IndexIVFFastScan *>(ivf) || !ivf->invlists)
        return 0;
    size_t coarse = ivf->coarse_code_size();
    if (coarse + ivf->code_size != cs)
        return 0;
    codes.resize(n * cs);
    for (size_t l = 0; l < ivf->nlist && m < n; l++)
        for (size_t j = 0; j < ivf->invlists->list_size(l) && m < n; j++, m++) {
            ivf->encode_listno((idx_t)l, &codes[m * cs]);
            faiss::InvertedLists::ScopedCodes c(ivf->invlists, l, j);
            memcpy(&codes[m * cs + coarse], c.get(), ivf->code_size);
        }
    codes.resize(m * cs);
    return m;
}

/* FAISS 1.7.3's merge_from moves codes between indexes of one type and code
 * size without comparing their training: codes of an index trained apart
 * (another PQ codebook, other IVF centroids) are read with this index's,
 * and answers are wrong without an error. The two trainings must encode
 * alike: some of the other's own vectors (decoded from its codes) and
 * fixed random ones, encoded by both, must give the same codes. Indexes of
 * one training always pass (the same computation on the same numbers); a
 * type with no standalone codec is not compared. */
static int check_same_training(Index *t, Index *o, fpx_err *err) {
    if (o->ntotal == 0 || t->d != o->d)
        return 0;
    size_t cs = t->sa_code_size();
    if (cs == 0 || cs != o->sa_code_size())
        return 0;
    std::vector<uint8_t> held;
    size_t m = held_codes(o, 16, held);
    const size_t nrand = 8, d = (size_t)t->d;
    std::vector<float> x((m + nrand) * d);
    if (m)
        o->sa_decode((idx_t)m, held.data(), x.data());
    std::mt19937 rng(1234);
    std::normal_distribution<float> g;
    for (size_t i = m * d; i < x.size(); i++)
        x[i] = g(rng);
    size_t np = m + nrand;
    std::vector<uint8_t> ct(np * cs), co(np * cs);
    t->sa_encode((idx_t)np, x.data(), ct.data());
    o->sa_encode((idx_t)np, x.data(), co.data());
    if (ct != co)
        return set_err(err, FPX_E_VALIDATION,
                       "merge_from of indexes trained apart: the two encode the same vectors "
                       "differently (another codebook or coarse quantizer), so the other's codes "
                       "would be read wrong here; merge indexes made from one trained index "
                       "(train one, then export/import or clone it)");
    return 0;
}

/* check_same_training, for the types that have a standalone codec. */
static int check_merge_training(Index *t, Index *o, fpx_err *err) {
    try {
        return check_same_training(t, o, err);
    } catch (const faiss::FaissException &) {
        return 0; /* sa_encode / sa_decode not implemented for this type */
    }
}

int fpx_engine_merge_check(fpx_engine *e, fpx_engine *other, fpx_err *err) {
    if (!e->bin != !other->bin)
        return set_err(err, FPX_E_VALIDATION, "a binary index and a float index cannot be merged");
    /* FAISS 1.7.3 moves the other's codes whatever either holds of training:
     * codes moved into an untrained index are read with a codebook (or coarse
     * quantizer) it does not have, or that its later training makes anew,
     * and every search of them answers wrong without an error. */
    if (fpx_engine_ntotal(other) > 0 && !fpx_engine_is_trained(e))
        return set_err(err, FPX_E_VALIDATION,
                       "merge_from into an untrained index: the other index's %lld vectors are "
                       "encoded with a training this index does not have; train it first",
                       (long long)fpx_engine_ntotal(other));
    try {
        std::string refused;
        try {
            if (e->bin) {
                e->bin->check_compatible_for_merge(*other->bin);
            } else {
                match_flat_class(e->index.get(), other->index);
                e->index->check_compatible_for_merge(*other->index);
            }
        } catch (const faiss::FaissException &ex) {
            refused = faiss_message(ex.what());
        }
        if (refused.empty())
            return e->bin ? 0
                          : check_fast_scan_merge(e->index.get(), other->index.get(), err) ||
                                check_merge_training(e->index.get(), other->index.get(), err);
        /* a type without merge_from has no check either: FAISS's merge_from says so */
        if (refused.find("check_compatible_for_merge() not implemented") != std::string::npos)
            refused = "merge_from() not implemented";
        return set_err(err, FPX_E_FAISS, "%s", refused.c_str());
    }
    FPX_CATCH(err, FPX_E_FAISS)
}

int fpx_engine_merge(fpx_engine *e, fpx_engine *other, fpx_err *err) {
    if (!e->bin != !other->bin)
        return set_err(err, FPX_E_VALIDATION, "a binary index and a float index cannot be merged");
    try {
        /* The lists of an IVF hold positions: the other's positions 0..m-1 go
         * after this one's. Other types number by place, and refuse an offset. */
        if (e->bin) {
            bool ivf = dynamic_cast<faiss::IndexBinaryIVF *>(e->bin.get()) != nullptr;
            e->bin->merge_from(*other->bin, ivf ? e->bin->ntotal : 0);
        } else {
            match_flat_class(e->index.get(), other->index);
            e->index->merge_from(*other->index, core_ivf(e->index.get()) ? e->index->ntotal : 0);
        }
        sync_norms(e);
        sync_norms(other);
        return 0;
    }
    FPX_CATCH(err, FPX_E_FAISS)
}

} // extern "C"

namespace {

/* The storage of an HNSW index whose vectors are held as codes of a fixed
 * size (flat, SQ, PQ, 2-level storage), or nullptr. */
faiss::IndexFlatCodes *hnsw_codes(const Index *idx) {
    auto h = dynamic_cast<const faiss::IndexHNSW *>(idx);
    return h ? dynamic_cast<faiss::IndexFlatCodes *>(h->storage) : nullptr;
}

/* An emptied copy of HNSW index h (its settings and its storage's training)
 * holding the n codes given, in order. FAISS cannot move codes between HNSW
 * graphs, so the graph is built again: the codes, decoded, are added in
 * order (the graph FAISS builds from those vectors; from the very vectors
 * for flat storage), and the storage then takes the codes themselves, in
 * case encoding a decoded vector again gave another code. */
Index *hnsw_with_codes(const faiss::IndexHNSW *h, const uint8_t *codes, idx_t n) {
    faiss::VectorIOWriter cw;
    write_float(h, &cw);
    faiss::VectorIOReader cr;
    cr.data.swap(cw.data);
    std::unique_ptr<Index> c(read_float(&cr));
    c->reset();
    std::vector<float> x((size_t)n * (size_t)h->d);
    if (n)
        h->storage->sa_decode(n, codes, x.data());
    in_team(
        n, [&] { c->add(n, x.data()); }, Work::build);
    auto fc = hnsw_codes(c.get());
    memcpy(fc->codes.data(), codes, (size_t)n * fc->code_size);
    return c.release();
}

} // namespace

extern "C" {

/* FAISS 1.7.3's merge_from cannot append to a fast-scan list (the process
 * ends): each list's codes are unpacked, joined and packed again; the
 * other's positions follow this index's, as merge_from numbers them. */
static int append_ivf_fast_scan(fpx_engine *e, fpx_engine *other, faiss::IndexIVFFastScan *t,
                                faiss::IndexIVFFastScan *o, fpx_err *err) {
    auto tb = dynamic_cast<faiss::BlockInvertedLists *>(t->invlists);
    auto ob = dynamic_cast<faiss::BlockInvertedLists *>(o->invlists);
    if (!tb || !ob || t->nlist != o->nlist || t->d != o->d || t->M != o->M || t->bbs != o->bbs ||
        t->code_size != o->code_size || t->metric_type != o->metric_type)
        return set_err(err, FPX_E_VALIDATION, "IVF fast-scan indexes of other settings");
    if (check_merge_training(e->index.get(), other->index.get(), err))
        return -1;
    try {
        size_t cs = t->code_size, bbs = (size_t)t->bbs;
        idx_t off = t->ntotal;
        std::vector<uint8_t> codes;
        for (size_t l = 0; l < t->nlist; l++) {
            size_t a = tb->list_size(l), b = ob->list_size(l);
            if (!b)
                continue;
            codes.assign((a + b) * cs, 0);
            if (a)
                unpack_codes(tb->get_codes(l), a, bbs, t->M, t->M2, cs, codes.data());
            unpack_codes(ob->get_codes(l), b, bbs, o->M, o->M2, cs, codes.data() + a * cs);
            std::vector<idx_t> ids(tb->ids[l].begin(), tb->ids[l].begin() + (ptrdiff_t)a);
            for (size_t j = 0; j < b; j++)
                ids.push_back(ob->ids[l][j] + off);
            tb->resize(l, a + b);
            pack_codes(codes.data(), a + b, bbs, t->M, t->M2, tb->codes[l]);
            tb->ids[l] = ids;
        }
        t->ntotal += o->ntotal;
        o->reset();
        sync_norms(e);
        sync_norms(other);
        return 0;
    }
    FPX_CATCH(err, FPX_E_FAISS)
}

/* Appends n codes to HNSW index h (storage fc) as vertices of the graph's
 * ground layer without links, as FAISS lays out a vertex before linking it:
 * a consistent index in which they are not reached. */
static void hnsw_append_unlinked(faiss::IndexHNSW *h, faiss::IndexFlatCodes *fc,
                                 const uint8_t *codes, idx_t n) {
    faiss::HNSW &g = h->hnsw;
    size_t cs = fc->code_size, n0 = (size_t)fc->ntotal;
    fc->codes.resize((n0 + (size_t)n) * cs);
    if (n)
        memcpy(fc->codes.data() + n0 * cs, codes, (size_t)n * cs);
    fc->ntotal += n;
    for (idx_t i = 0; i < n; i++) {
        g.levels.push_back(1);
        g.offsets.push_back(g.offsets.back() + (size_t)g.cum_nb_neighbors(1));
    }
    g.neighbors.resize(g.offsets.back(), -1);
    h->ntotal += n;
}

/* other's vectors after e's, as fpx_engine_merge (with its checks first)
 * puts them; binary flat indexes, which FAISS 1.7.3 cannot merge, append
 * their codes, an IVF fast-scan index joins each list's codes and packs them
 * again, and an HNSW index over storage of fixed-size codes takes the
 * other's codes without linking them into its graph: fpx_engine_join's
 * reordering builds the graph next. other is left empty. */
static int append_part(fpx_engine *e, fpx_engine *other, fpx_err *err) {
    auto ft = e->index ? dynamic_cast<faiss::IndexIVFFastScan *>(e->index.get()) : nullptr;
    auto fo = other->index ? dynamic_cast<faiss::IndexIVFFastScan *>(other->index.get()) : nullptr;
    if (ft && fo)
        return append_ivf_fast_scan(e, other, ft, fo, err);
    auto he = e->index ? hnsw_codes(e->index.get()) : nullptr;
    auto ho = other->index ? hnsw_codes(other->index.get()) : nullptr;
    if (he && ho) { /* no merge_from: the other's vectors join the graph */
        auto h = dynamic_cast<faiss::IndexHNSW *>(e->index.get());
        auto oh = dynamic_cast<faiss::IndexHNSW *>(other->index.get());
        if (h->d != oh->d || h->metric_type != oh->metric_type || typeid(*he) != typeid(*ho) ||
            he->code_size != ho->code_size)
            return set_err(err, FPX_E_VALIDATION,
                           "HNSW indexes of another dimension, metric or storage");
        if (check_merge_training(he, ho, err))
            return -1;
        try {
            hnsw_append_unlinked(h, he, ho->codes.data(), ho->ntotal);
            oh->reset();
            return 0;
        }
        FPX_CATCH(err, FPX_E_FAISS)
    }
    auto bf = e->bin ? dynamic_cast<faiss::IndexBinaryFlat *>(e->bin.get()) : nullptr;
    auto of = other->bin ? dynamic_cast<faiss::IndexBinaryFlat *>(other->bin.get()) : nullptr;
    if (!bf || !of)
        return fpx_engine_merge_check(e, other, err) || fpx_engine_merge(e, other, err) ? -1 : 0;
    if (bf->d != of->d)
        return set_err(err, FPX_E_VALIDATION, "binary flat indexes of %d and %d bits", (int)bf->d,
                       (int)of->d);
    try {
        bf->xb.insert(bf->xb.end(), of->xb.begin(), of->xb.end());
        bf->ntotal += of->ntotal;
        of->reset();
        return 0;
    }
    FPX_CATCH(err, FPX_E_FAISS)
}

/* Codes of n positions, code_size bytes each, reordered: position p takes
 * the old position order[p]. */
static void permute_codes(std::vector<uint8_t> &codes, size_t cs, const int64_t *order, size_t n) {
    std::vector<uint8_t> out(n * cs);
    for (size_t p = 0; p < n; p++)
        memcpy(&out[p * cs], &codes[(size_t)order[p] * cs], cs);
    codes.swap(out);
}

/* Reorders e's vectors as fpx_engine_join says: position p takes position
 * order[p]; a type that cannot be reordered fails, unchanged. */
static int permute(fpx_engine *e, const int64_t *order, int64_t n, fpx_err *err) {
    int64_t ntotal = fpx_engine_ntotal(e);
    if (n != ntotal)
        return set_err(err, FPX_E_INTERNAL, "a reordering of %lld positions for %lld vectors",
                       (long long)n, (long long)ntotal);
    std::vector<idx_t> inv((size_t)n, -1);
    for (int64_t p = 0; p < n; p++) {
        if (order[p] < 0 || order[p] >= n || inv[(size_t)order[p]] != -1)
            return set_err(err, FPX_E_INTERNAL, "a reordering that is not a permutation");
        inv[(size_t)order[p]] = p;
    }
    try {
        if (e->bin) {
            if (auto ivf = dynamic_cast<faiss::IndexBinaryIVF *>(e->bin.get())) {
                rewrite_ivf_ids(ivf, [&](idx_t id) { return inv[(size_t)id]; });
                return 0;
            }
            auto f = dynamic_cast<faiss::IndexBinaryFlat *>(e->bin.get());
            if (!f)
                return set_err(err, FPX_E_UNSUPPORTED,
                               "the vectors of this binary index type cannot be reordered");
            permute_codes(f->xb, (size_t)f->code_size, order, (size_t)n);
            return 0;
        }
        if (auto ivf = core_ivf(e->index.get())) {
            rewrite_ivf_ids(ivf, [&](idx_t id) { return inv[(size_t)id]; });
            return 0;
        }
        if (auto fc = hnsw_codes(e->index.get())) {
            /* the graph is built again from the codes in the new order */
            std::vector<uint8_t> codes(fc->codes.begin(),
                                       fc->codes.begin() + (ptrdiff_t)((size_t)n * fc->code_size));
            permute_codes(codes, fc->code_size, order, (size_t)n);
            auto h = dynamic_cast<const faiss::IndexHNSW *>(e->index.get());
            e->index.reset(hnsw_with_codes(h, codes.data(), n));
            return 0;
        }
        Index *core = e->index.get();
        while (auto pt = dynamic_cast<faiss::IndexPreTransform *>(core))
            core = pt->index;
        if (auto fs = dynamic_cast<faiss::IndexFastScan *>(core)) {
            /* codes packed in blocks: unpacked, reordered and packed again */
            size_t cs = fs->code_size, nn = (size_t)n;
            std::vector<uint8_t> codes(nn * cs);
            unpack_codes(fs->codes.data(), nn, (size_t)fs->bbs, fs->M, fs->M2, cs, codes.data());
            permute_codes(codes, cs, order, nn);
            pack_codes(codes.data(), nn, (size_t)fs->bbs, fs->M, fs->M2, fs->codes);
            sync_orig_codes(e);
            return 0;
        }
        auto fc = dynamic_cast<faiss::IndexFlatCodes *>(core);
        if (!fc)
            return set_err(err, FPX_E_UNSUPPORTED,
                           "the vectors of this index type cannot be reordered (only flat-code, "
                           "fast-scan and IVF indexes can)");
        permute_codes(fc->codes, fc->code_size, order, (size_t)n);
        std::vector<float>().swap(e->norms); /* computed again, in the new order */
        sync_norms(e);
        return 0;
    }
    FPX_CATCH(err, FPX_E_FAISS)
}

int fpx_engine_join(fpx_engine **parts, int64_t n, const int64_t *order, int64_t count,
                    fpx_err *err) {
    int rc = 0;
    for (int64_t i = 1; i < n; i++) { /* each part's memory goes as soon as it is in */
        rc = rc || append_part(parts[0], parts[i], err);
        fpx_engine_free(parts[i]);
        parts[i] = nullptr;
    }
    return rc ? -1 : permute(parts[0], order, count, err);
}

/* Runs fn, a call of FAISS's standalone codec, on a float index: binary ones
 * have none in FAISS 1.7.3. */
static int codec_call(const fpx_engine *e, fpx_err *err, const std::function<void()> &fn) {
    if (e->bin)
        return set_err(err, FPX_E_VALIDATION,
                       "binary indexes have no standalone codec in FAISS 1.7.3");
    try {
        fn();
        return 0;
    }
    FPX_CATCH(err, FPX_E_FAISS)
}

int fpx_engine_sa_code_size(const fpx_engine *e, size_t *size, fpx_err *err) {
    return codec_call(e, err, [&] { *size = e->index->sa_code_size(); });
}

int fpx_engine_sa_encode(const fpx_engine *e, int64_t n, const float *x, uint8_t *codes,
                         fpx_err *err) {
    return codec_call(e, err, [&] { in_team(n, [&] { e->index->sa_encode(n, x, codes); }); });
}

int fpx_engine_sa_decode(const fpx_engine *e, int64_t n, const uint8_t *codes, float *x,
                         fpx_err *err) {
    int refused = 0;
    int rc = codec_call(e, err, [&] {
        refused = check_list_numbers(e->index.get(), n, codes, e->index->sa_code_size(), 0, err);
        if (!refused)
            in_team(n, [&] { e->index->sa_decode(n, codes, x); });
    });
    return refused ? refused : rc;
}

int fpx_engine_reset(fpx_engine *e, fpx_err *err) {
    try {
        if (e->bin)
            e->bin->reset();
        else
            e->index->reset();
        sync_norms(e);
        return 0;
    }
    FPX_CATCH(err, FPX_E_FAISS)
}

int fpx_engine_set_params(fpx_engine *e, const char *params, fpx_err *err) {
    if (e->bin) {
        /* FAISS's ParameterSpace knows no binary index: the two knobs by hand */
        char name[64];
        double v;
        if (sscanf(params, "%63[^=]=%lf", name, &v) == 2 && !strcmp(name, "nflip")) {
            /* the bits a hash index's search flips; FAISS serializes it */
            auto hh = dynamic_cast<faiss::IndexBinaryHash *>(e->bin.get());
            auto mh = dynamic_cast<faiss::IndexBinaryMultiHash *>(e->bin.get());
            if (!hh && !mh)
                return set_err(err, FPX_E_VALIDATION,
                               "nflip applies to binary hash indexes (BHash...) only");
            /* A search probes sum over i <= nflip of C(b, i) buckets per query
             * and table: bounded, so that no setting stalls the server. */
            int b = hh ? hh->b : mh->b;
            double buckets = 0, c = 1;
            for (int i = 0; i <= (int)v && i <= b; i++) {
                buckets += c;
                c = c * (b - i) / (i + 1);
            }
            if (buckets > (double)(1 << 20))
                return set_err(err, FPX_E_VALIDATION,
                               "nflip %d would probe %.3g buckets per query (b = %d); at most "
                               "1048576 are served",
                               (int)v, buckets, b);
            if (hh)
                hh->nflip = (int)v;
            else
                mh->nflip = (int)v;
            return 0;
        }
        if (sscanf(params, "%63[^=]=%lf", name, &v) != 2 || v < 1 || v > (1 << 20))
            return set_err(err, FPX_E_VALIDATION, "could not parse parameter %s", params);
        if (auto ivf = dynamic_cast<faiss::IndexBinaryIVF *>(e->bin.get())) {
            if (!strcmp(name, "nprobe")) {
                ivf->nprobe = (size_t)v;
                return 0;
            }
        }
        if (auto h = dynamic_cast<faiss::IndexBinaryHNSW *>(e->bin.get())) {
            if (!strcmp(name, "efSearch")) {
                h->hnsw.efSearch = (int)v;
                return 0;
            }
        }
        return set_err(err, FPX_E_VALIDATION, "could not set parameter %s for this binary index",
                       name);
    }
    try {
        faiss::ParameterSpace ps;
        ps.set_index_parameters(e->index.get(), params);
        return 0;
    }
    FPX_CATCH(err, FPX_E_VALIDATION)
}

int fpx_engine_set_by_residual(fpx_engine *e, int on, fpx_err *err) {
    faiss::IndexIVF *ivf = e->bin ? nullptr : core_ivf(e->index.get());
    auto pq = dynamic_cast<faiss::IndexIVFPQ *>(ivf);
    auto sq = dynamic_cast<faiss::IndexIVFScalarQuantizer *>(ivf);
    /* each FAISS class has a by_residual member of its own */
    auto aq = dynamic_cast<faiss::IndexIVFAdditiveQuantizer *>(ivf);
    auto fs = dynamic_cast<faiss::IndexIVFFastScan *>(ivf);
    if (!pq && !sq && !aq && !fs)
        return set_err(err, FPX_E_VALIDATION,
                       "by_residual applies to IVF-PQ, IVF scalar quantizer, IVF additive "
                       "quantizer and IVF fast-scan indexes only");
    /* Training and the stored codes follow it: a change after either would
     * leave codes that no longer decode. */
    /* FAISS takes it at any time, and training, encoding and search follow
     * the value they find: stored codes stay as they were encoded, and a
     * search decodes them by the new value, in FAISS as here. */
    if (pq)
        pq->by_residual = on != 0;
    else if (sq)
        sq->by_residual = on != 0;
    else if (aq)
        aq->by_residual = on != 0;
    else
        fs->by_residual = on != 0;
    return 0;
}

int fpx_engine_set_fast_scan(fpx_engine *e, const char *name, int64_t value, fpx_err *err) {
    Index *idx = e->bin ? nullptr : e->index.get();
    faiss::IndexFastScan *fs = idx ? core_fast_scan(idx) : nullptr;
    faiss::IndexIVFFastScan *ivf = idx ? core_ivf_fast_scan(idx) : nullptr;
    if (!fs && !ivf)
        return set_err(err, FPX_E_VALIDATION, "%s applies to fast-scan indexes only", name);
    try {
        if (!strcmp(name, "implem")) {
            if (fs)
                fs->implem = (int)value;
            else
                ivf->implem = (int)value;
            sync_orig_codes(e);
            return 0;
        }
        if (!strcmp(name, "qbs")) {
            if (fs)
                fs->qbs = (int)value;
            else
                ivf->qbs = (int)value;
            return 0;
        }
        if (!strcmp(name, "norm_scale")) {
            if (auto a = dynamic_cast<faiss::IndexAdditiveQuantizerFastScan *>(fs)) {
                a->norm_scale = (int)value;
                return 0;
            }
            if (auto a = dynamic_cast<faiss::IndexIVFAdditiveQuantizerFastScan *>(ivf)) {
                a->norm_scale = (int)value;
                return 0;
            }
            return set_err(err, FPX_E_VALIDATION,
                           "norm_scale applies to additive quantizer fast-scan indexes only");
        }
    }
    FPX_CATCH(err, FPX_E_FAISS)
    return set_err(err, FPX_E_VALIDATION, "%s is not a fast-scan setting", name);
}

/* Where a member setting lives in e's index, or nullptr, with its range: IVF
 * parallel_mode (int), binary flat and binary IVF use_heap (bool), HNSW
 * search_bounded_queue (bool), and two that FAISS's ParameterSpace sets but
 * its write_index leaves out, so that a snapshot, a train (which reads the
 * trained index back) and a compaction lost them: IVF max_codes (size_t) and
 * IndexIVFPQ polysemous_ht ("ht"; IndexPQ's is in its bytes), of the index
 * and, as quantizer_max_codes and quantizer_polysemous_ht, of an IVF
 * quantizer that is itself an IVF. */
struct member_ref {
    int *i;
    bool *b;
    size_t *z;
    int64_t lo, hi;
};

/* The IVF ParameterSpace sets max_codes and ht of, as its walk finds it:
 * under IDMap wrappers (a quantizer may hold one), pre-transforms and
 * refinements, and past `depth` "quantizer_" prefixes, the IVF's quantizer
 * once for each. */
static faiss::IndexIVF *param_ivf(Index *idx, int depth) {
    for (;;) {
        if (auto im = dynamic_cast<faiss::IndexIDMap *>(idx))
            idx = im->index;
        else if (auto pt = dynamic_cast<faiss::IndexPreTransform *>(idx))
            idx = pt->index;
        else if (auto rf = dynamic_cast<faiss::IndexRefine *>(idx))
            idx = rf->base_index;
        else if (auto ivf = dynamic_cast<faiss::IndexIVF *>(idx); ivf && depth > 0)
            idx = ivf->quantizer, depth--;
        else
            return depth == 0 ? dynamic_cast<faiss::IndexIVF *>(idx) : nullptr;
    }
}

/* The "quantizer_" prefixes of name: how many (*depth) and the name past them. */
static const char *quantizer_depth(const char *name, int *depth) {
    for (*depth = 0; !strncmp(name, "quantizer_", 10); ++*depth)
        name += 10;
    return name;
}

/* A float IVF's ClusteringParameters, which its training's k-means reads
 * (FAISS's index.cp; write_index leaves them out, and its reader gives the
 * defaults: 25 iterations where the constructor sets 10). Only while the IVF
 * is untrained: its training reads them once, and a trained IVF's train
 * keeps its centroids. min_points_per_centroid, verbose (a warning, printing)
 * and decode_block_size (encoded training, which an IVF does not run) change
 * no result. */
static member_ref cp_member(fpx_engine *e, const char *field) {
    member_ref r = {nullptr, nullptr, nullptr, 0, 1};
    faiss::IndexIVF *ivf = param_ivf(e->index.get(), 0);
    if (!ivf)
        return r;
    faiss::ClusteringParameters &cp = ivf->cp;
    if (!strcmp(field, "niter"))
        r.i = &cp.niter, r.lo = 1, r.hi = 1 << 20;
    else if (!strcmp(field, "nredo"))
        r.i = &cp.nredo, r.lo = 1, r.hi = 1 << 20;
    else if (!strcmp(field, "seed"))
        r.i = &cp.seed, r.lo = INT32_MIN, r.hi = INT32_MAX;
    else if (!strcmp(field, "max_points_per_centroid"))
        r.i = &cp.max_points_per_centroid, r.lo = 1, r.hi = 1 << 30;
    else if (!strcmp(field, "spherical"))
        r.b = &cp.spherical;
    else if (!strcmp(field, "int_centroids"))
        r.b = &cp.int_centroids;
    else if (!strcmp(field, "update_index"))
        r.b = &cp.update_index;
    else if (!strcmp(field, "frozen_centroids"))
        r.b = &cp.frozen_centroids;
    return r;
}

static member_ref member_of(fpx_engine *e, const char *name) {
    member_ref r = {nullptr, nullptr, nullptr, 0, 1};
    if (e->bin) {
        faiss::IndexBinary *b = e->bin.get();
        if (!strcmp(name, "use_heap")) {
            if (auto f = dynamic_cast<faiss::IndexBinaryFlat *>(b))
                r.b = &f->use_heap;
            else if (auto v = dynamic_cast<faiss::IndexBinaryIVF *>(b))
                r.b = &v->use_heap;
        } else if (!strcmp(name, "search_bounded_queue")) {
            if (auto h = dynamic_cast<faiss::IndexBinaryHNSW *>(b))
                r.b = &h->hnsw.search_bounded_queue;
        }
        return r;
    }
    if (!strcmp(name, "parallel_mode")) {
        if (faiss::IndexIVF *ivf = core_ivf(e->index.get()))
            r.i = &ivf->parallel_mode, r.hi = 3;
        return r;
    }
    if (!strcmp(name, "search_bounded_queue")) {
        if (faiss::IndexHNSW *h = under_transforms<faiss::IndexHNSW>(e->index.get()))
            r.b = &h->hnsw.search_bounded_queue;
        return r;
    }
    if (!strncmp(name, "cp_", 3))
        return cp_member(e, name + 3);
    /* max_codes and polysemous_ht also of an IVF quantizer's own IVF
     * ("quantizer_max_codes", set_params' quantizer_ht) */
    int depth;
    const char *base = quantizer_depth(name, &depth);
    if (depth > 1)
        return r;
    if (!strcmp(base, "max_codes")) {
        if (faiss::IndexIVF *ivf = param_ivf(e->index.get(), depth))
            r.z = &ivf->max_codes, r.hi = (int64_t)1 << 53;
    } else if (!strcmp(base, "polysemous_ht")) {
        if (auto pq = dynamic_cast<faiss::IndexIVFPQ *>(param_ivf(e->index.get(), depth)))
            r.i = &pq->polysemous_ht, r.hi = 1 << 20;
    }
    return r;
}

/* IndexIVFPQ's use_precomputed_table (-1 none, 0 chosen by training, 1 the
 * table of every list, 2 a MultiIndexQuantizer's table): FAISS's write_index
 * leaves it out and its reader chooses again. Before training, FAISS's
 * training honours -1, 1 and 2 and chooses for 0. On a trained index, setting
 * 1 or 2 makes that table now, unless the index holds it already: FAISS's
 * search reads the table whatever it holds (an empty one, or one of the other
 * type, is read out of bounds; in-process FAISS crashes), also after
 * by_residual is turned on. A table over FAISS's own bound is refused. */
static faiss::IndexIVFPQ *ivfpq_of(fpx_engine *e) {
    return e->bin ? nullptr : dynamic_cast<faiss::IndexIVFPQ *>(core_ivf(e->index.get()));
}

static int set_precomputed(fpx_engine *e, int64_t value, fpx_err *err) {
    faiss::IndexIVFPQ *pq = ivfpq_of(e);
    if (!pq)
        return set_err(err, FPX_E_VALIDATION,
                       "use_precomputed_table applies to IndexIVFPQ (\"IVF<n>,PQ<M>\") only");
    auto miq = dynamic_cast<const faiss::MultiIndexQuantizer *>(pq->quantizer);
    if (value < -1 || value > 2)
        return set_err(err, FPX_E_VALIDATION, "use_precomputed_table must be -1..2, got %lld",
                       (long long)value);
    if (value == 2 && !(miq && pq->pq.M % miq->pq.M == 0))
        return set_err(err, FPX_E_VALIDATION,
                       "use_precomputed_table=2 is the table of an index over a "
                       "MultiIndexQuantizer (\"IMI...\") whose PQ's M divides the index's");
    bool make = value >= 1 && pq->is_trained &&
                (value != pq->use_precomputed_table || pq->precomputed_table.size() == 0);
    if (make) {
        size_t rows = value == 1 ? pq->nlist : miq->pq.ksub;
        size_t bytes = rows * pq->pq.M * pq->pq.ksub * sizeof(float);
        if (bytes > faiss::precomputed_table_max_bytes)
            return set_err(err, FPX_E_VALIDATION,
                           "use_precomputed_table=%lld would make a table of %zu bytes, over "
                           "FAISS's bound of %zu",
                           (long long)value, bytes, faiss::precomputed_table_max_bytes);
        try {
            int use = (int)value;
            faiss::initialize_IVFPQ_precomputed_table(use, pq->quantizer, pq->pq,
                                                      pq->precomputed_table, false);
        }
        FPX_CATCH(err, FPX_E_FAISS)
    }
    if (value == -1)
        pq->precomputed_table.resize(0); /* as FAISS's training leaves it with -1 */
    pq->use_precomputed_table = (int)value;
    return 0;
}

int fpx_engine_set_member(fpx_engine *e, const char *name, int64_t value, fpx_err *err) {
    if (!strcmp(name, "use_precomputed_table"))
        return set_precomputed(e, value, err);
    member_ref r = member_of(e, name);
    if (!r.i && !r.b && !r.z)
        return set_err(err, FPX_E_VALIDATION, "%s applies to %s only", name,
                       !strcmp(name, "parallel_mode")   ? "float IVF indexes"
                       : !strcmp(name, "use_heap")      ? "binary flat and binary IVF indexes"
                       : !strcmp(name, "max_codes")     ? "float IVF indexes"
                       : !strcmp(name, "polysemous_ht") ? "IndexPQ and IndexIVFPQ"
                       : !strcmp(name, "quantizer_max_codes")
                           ? "IVF indexes whose quantizer is itself an IVF"
                       : !strcmp(name, "quantizer_polysemous_ht")
                           ? "IVF indexes whose quantizer is an IndexIVFPQ"
                       : !strncmp(name, "cp_", 3) ? "float IVF indexes (ClusteringParameters)"
                                                  : "HNSW indexes (float and binary)");
    /* parallel_mode: FAISS's search throws on other modes, and its flag 1024
     * (no heap initialisation) is for its own calls: a search would return
     * the result arrays' previous contents */
    if (value < r.lo || value > r.hi)
        return set_err(err, FPX_E_VALIDATION, "%s must be %lld..%lld, got %lld", name,
                       (long long)r.lo, (long long)r.hi, (long long)value);
    if (r.i)
        *r.i = (int)value;
    else if (r.b)
        *r.b = value != 0;
    else
        *r.z = (size_t)value;
    return 0;
}

void fpx_engine_copy_members(fpx_engine *dst, const fpx_engine *src) {
    int64_t v, dflt;
    fpx_err ignored; /* a setting dst's type does not have stays unset */
    for (int i = 0; fpx_engine_member_param(i, &dflt); i++)
        if (fpx_engine_get_member(const_cast<fpx_engine *>(src), fpx_engine_member_param(i, &dflt),
                                  &v) == 0)
            (void)fpx_engine_set_member(dst, fpx_engine_member_param(i, &dflt), v, &ignored);
}

const char *fpx_engine_member_param(int i, int64_t *dflt) {
    static const struct {
        const char *name;
        int64_t dflt;
    } members[] = {
        {"parallel_mode", 0},
        {"use_heap", 1},
        {"search_bounded_queue", 1},
        {"use_precomputed_table", FPX_MEMBER_CHOSEN},
        {"max_codes", 0},
        {"polysemous_ht", 0},
        {"quantizer_max_codes", 0},
        {"quantizer_polysemous_ht", 0},
        /* an untrained IVF's k-means: its constructor's values are not FAISS's
         * reader's, so they are kept whatever they are */
        {"cp_niter", FPX_MEMBER_CHOSEN},
        {"cp_nredo", FPX_MEMBER_CHOSEN},
        {"cp_seed", FPX_MEMBER_CHOSEN},
        {"cp_max_points_per_centroid", FPX_MEMBER_CHOSEN},
        {"cp_spherical", FPX_MEMBER_CHOSEN},
        {"cp_int_centroids", FPX_MEMBER_CHOSEN},
        {"cp_update_index", FPX_MEMBER_CHOSEN},
        {"cp_frozen_centroids", FPX_MEMBER_CHOSEN},
    };
    enum { N = sizeof members / sizeof members[0] };
    static_assert(N <= FPX_MEMBERS_MAX, "FPX_MEMBERS_MAX");
    if (i < 0 || i >= N)
        return nullptr;
    *dflt = members[i].dflt;
    return members[i].name;
}

int fpx_engine_get_member(fpx_engine *e, const char *name, int64_t *value) {
    if (!strcmp(name, "use_precomputed_table")) {
        faiss::IndexIVFPQ *pq = ivfpq_of(e);
        /* 0 before training is "to be chosen": not a setting to carry */
        if (!pq || (!pq->is_trained && pq->use_precomputed_table == 0))
            return -1;
        return *value = pq->use_precomputed_table, 0;
    }
    if (!strncmp(name, "cp_", 3)) {
        /* a trained IVF's train reads them no more: not a setting to carry */
        faiss::IndexIVF *ivf = e->bin ? nullptr : param_ivf(e->index.get(), 0);
        if (!ivf || ivf->is_trained)
            return -1;
    }
    member_ref r = member_of(e, name);
    if (r.i)
        return *value = *r.i, 0;
    if (r.b)
        return *value = *r.b ? 1 : 0, 0;
    if (r.z)
        return *value = (int64_t)*r.z, 0;
    return -1;
}

/* IndexPQ's search_type and polysemous_ht, FAISS's members that its
 * write_index keeps (a snapshot and an export carry them). FAISS takes any
 * search type and refuses, at search time, the ones the index cannot run
 * (polysemous search of codes other than 8 bits or of an inner-product index,
 * symmetric distances without their table): the same error here. */
int fpx_engine_set_pq_search(fpx_engine *e, const char *name, int64_t value, fpx_err *err) {
    Index *idx = e->bin ? nullptr : e->index.get();
    if (auto pt = dynamic_cast<faiss::IndexPreTransform *>(idx))
        idx = pt->index;
    auto pq = dynamic_cast<faiss::IndexPQ *>(idx);
    if (!pq && !strcmp(name, "polysemous_ht"))
        return fpx_engine_set_member(e, name, value, err); /* an IndexIVFPQ's */
    if (!pq)
        return set_err(err, FPX_E_VALIDATION, "%s applies to IndexPQ (\"PQ<M>x<nbits>\") only",
                       name);
    if (!strcmp(name, "search_type")) {
        if (value < faiss::IndexPQ::ST_PQ || value > faiss::IndexPQ::ST_polysemous_generalize)
            return set_err(err, FPX_E_VALIDATION, "search_type must be 0..5, got %lld",
                           (long long)value);
        pq->search_type = (faiss::IndexPQ::Search_type_t)value;
        return 0;
    }
    if (value < 0 || value > (1 << 20))
        return set_err(err, FPX_E_VALIDATION, "polysemous_ht must be 0..1048576, got %lld",
                       (long long)value);
    pq->polysemous_ht = (int)value;
    return 0;
}

int fpx_engine_set_direct_map(fpx_engine *e, int type, fpx_err *err) {
    if (e->bin) {
        auto bivf = dynamic_cast<faiss::IndexBinaryIVF *>(e->bin.get());
        if (!bivf || type < 0 || type > 2)
            return set_err(err, FPX_E_VALIDATION, "direct_map applies to IVF indexes, as 0..2");
        try {
            bivf->set_direct_map_type(type == 0   ? faiss::DirectMap::NoMap
                                      : type == 1 ? faiss::DirectMap::Array
                                                  : faiss::DirectMap::Hashtable);
            return 0;
        }
        FPX_CATCH(err, FPX_E_FAISS)
    }
    faiss::IndexIVF *ivf = core_ivf(e->index.get());
    if (!ivf)
        return set_err(err, FPX_E_VALIDATION, "direct_map applies to IVF indexes only");
    if (type < 0 || type > 2)
        return set_err(err, FPX_E_VALIDATION, "direct_map must be 0 (none), 1 (array) or 2 (hash)");
    try {
        ivf->set_direct_map_type(type == 0   ? faiss::DirectMap::NoMap
                                 : type == 1 ? faiss::DirectMap::Array
                                             : faiss::DirectMap::Hashtable);
        return 0;
    }
    FPX_CATCH(err, FPX_E_FAISS)
}

/* Live positions in order; rank[pos] is each one's place, -1 for the dead.
 * *sequential: every label equals its rank. */
static std::vector<idx_t> live_labels(const fpx_bitset *live, idx_t ntotal, const int64_t *labels,
                                      std::vector<idx_t> &rank, bool *sequential) {
    std::vector<idx_t> out;
    rank.assign((size_t)ntotal, -1);
    out.reserve((size_t)live->count);
    *sequential = true;
    for (idx_t p = 0; p < ntotal; p++) {
        if ((live->words[p >> 6] >> (p & 63)) & 1) {
            rank[(size_t)p] = (idx_t)out.size();
            idx_t lab = labels ? labels[p] : p;
            *sequential &= lab == (idx_t)out.size();
            out.push_back(lab);
        }
    }
    return out;
}

static int to_buffer(faiss::VectorIOWriter &w, uint8_t **buf, size_t *len, fpx_err *err) {
    uint8_t *b = (uint8_t *)malloc(w.data.size() ? w.data.size() : 1);
    if (!b)
        return set_err(err, FPX_E_INTERNAL, "out of memory for an index's bytes");
    memcpy(b, w.data.data(), w.data.size());
    *buf = b;
    *len = w.data.size();
    return 0;
}

} // extern "C"

namespace {

/* What an export needs to know of a float or a binary FAISS index. */
struct FloatKind {
    using Ix = Index;
    using IDMap = faiss::IndexIDMap;
    using IDMap2 = faiss::IndexIDMap2;
    static void write(const Ix *i, faiss::IOWriter *w) {
        write_float(i, w);
    }
    static Ix *read(faiss::IOReader *r) {
        return read_float(r);
    }
    static faiss::IndexIVF *ivf_of(Ix *i) {
        return core_ivf(i);
    }
    template <class M> static void describe(M &m, const Ix *c) {
        m.metric_type = c->metric_type;
    }
};

struct BinaryKind {
    using Ix = BinIndex;
    using IDMap = faiss::IndexBinaryIDMap;
    using IDMap2 = faiss::IndexBinaryIDMap2;
    static void write(const Ix *i, faiss::IOWriter *w) {
        faiss::write_index_binary(i, w);
    }
    static Ix *read(faiss::IOReader *r) {
        return faiss::read_index_binary(r);
    }
    static faiss::IndexBinaryIVF *ivf_of(Ix *i) {
        return dynamic_cast<faiss::IndexBinaryIVF *>(i);
    }
    template <class M> static void describe(M &m, const Ix *c) {
        m.code_size = c->code_size;
    }
};

/* Writes c wrapped in an IDMap of type M with the given ids. Built by hand:
 * the wrapper's constructor wants an empty index. */
template <class K, class M>
void write_wrapped(typename K::Ix *c, const std::vector<idx_t> &ids, faiss::IOWriter *w) {
    M m;
    m.index = c;
    m.own_fields = false;
    m.d = c->d;
    K::describe(m, c);
    m.is_trained = c->is_trained;
    m.ntotal = c->ntotal;
    m.id_map = ids;
    K::write(&m, w);
}

/* An HNSW index built again from its live codes, in order (hnsw_with_codes):
 * over flat storage, the graph FAISS builds from the exact vectors; over
 * other storage (any_storage), the one it builds from the decoded vectors.
 * nullptr for every other type. */
Index *rebuild_hnsw(const Index *idx, const fpx_bitset *live, int any_storage) {
    auto fc = hnsw_codes(idx);
    if (!fc || (!any_storage && !dynamic_cast<const faiss::IndexHNSWFlat *>(idx)))
        return nullptr;
    std::vector<uint8_t> codes((size_t)live->count * fc->code_size);
    idx_t n = 0;
    for (idx_t p = 0; p < idx->ntotal; p++)
        if ((live->words[p >> 6] >> (p & 63)) & 1)
            memcpy(&codes[(size_t)(n++) * fc->code_size], &fc->codes[(size_t)p * fc->code_size],
                   fc->code_size);
    return hnsw_with_codes(dynamic_cast<const faiss::IndexHNSW *>(idx), codes.data(), n);
}

/* fpx_engine_export for either kind of index. */
template <class K>
int export_index(const typename K::Ix *idx, const fpx_bitset *live, const int64_t *labels,
                 int idmap, uint8_t **buf, size_t *len, fpx_err *err) {
    idx_t ntotal = idx->ntotal;
    try {
        /* FAISS cannot remove from an HNSW graph: one is built from the
         * live codes, as FAISS builds it from their vectors */
        std::unique_ptr<typename K::Ix> c;
        if constexpr (std::is_same_v<typename K::Ix, Index>) {
            if (live->count < ntotal)
                c.reset(rebuild_hnsw(idx, live, 1));
        }
        bool rebuilt = c != nullptr;
        if (!rebuilt) {
            /* A copy through FAISS's own serialization: clone_index does not
             * know every type (HNSW among them, in 1.7.3). */
            faiss::VectorIOWriter cw;
            K::write(idx, &cw);
            faiss::VectorIOReader cr;
            cr.data.swap(cw.data);
            c.reset(K::read(&cr));
        }
        /* the direct map goes for the removal, and comes back with the
         * lists' ids rewritten (below) */
        auto ivf = K::ivf_of(c.get());
        auto aside = map_aside(ivf);
        if (!rebuilt && live->count < ntotal) {
            DeadSelector dead(live);
            try {
                if (!remove_from_fast_scan(c.get(), dead))
                    c->remove_ids(dead);
            } catch (const faiss::FaissException &ex) {
                return set_err(err, FPX_E_FAISS,
                               "%lld deleted vectors cannot be left out of an export of this "
                               "index type: FAISS says: %s",
                               (long long)(ntotal - live->count), faiss_message(ex.what()).c_str());
            }
        }
        /* rank[pos]: the position of each live vector once the dead are gone */
        std::vector<idx_t> rank;
        bool sequential;
        std::vector<idx_t> out_labels = live_labels(live, ntotal, labels, rank, &sequential);
        bool wrap = idmap || (!ivf && !sequential);
        if (ivf) {
            rewrite_ivf_ids(ivf, [&](idx_t id) {
                return wrap ? rank[(size_t)id] : labels ? labels[id] : id;
            });
            aside.restore();
        }
        faiss::VectorIOWriter w;
        if (wrap && idmap == 2)
            write_wrapped<K, typename K::IDMap2>(c.get(), out_labels, &w);
        else if (wrap) {
            write_wrapped<K, typename K::IDMap>(c.get(), out_labels, &w);
        } else {
            K::write(c.get(), &w);
        }
        return to_buffer(w, buf, len, err);
    }
    FPX_CATCH(err, FPX_E_FAISS)
}

} // namespace

extern "C" {

int fpx_engine_export(const fpx_engine *e, const fpx_bitset *live, const int64_t *labels, int idmap,
                      uint8_t **buf, size_t *len, fpx_err *err) {
    std::shared_lock<std::shared_mutex> knobs(e->knobs); /* hnsw.efSearch as set */
    if (e->bin)
        return export_index<BinaryKind>(e->bin.get(), live, labels, idmap, buf, len, err);
    return export_index<FloatKind>(e->index.get(), live, labels, idmap, buf, len, err);
}

} // extern "C"

namespace {

/* fpx_engine_compact's copy for either kind of index: 1 when FAISS cannot
 * remove from this type (nothing made), 0 with *out holding the live
 * positions in order. */
template <class K>
int compact_copy(const typename K::Ix *idx, const fpx_bitset *live,
                 std::unique_ptr<typename K::Ix> &out) {
    idx_t ntotal = idx->ntotal;
    faiss::VectorIOWriter cw; /* a copy through FAISS's own serialization, as an export */
    K::write(idx, &cw);
    faiss::VectorIOReader cr;
    cr.data.swap(cw.data);
    std::unique_ptr<typename K::Ix> c(K::read(&cr));
    auto ivf = K::ivf_of(c.get());
    /* the direct map goes for the removal, and comes back with the ids
     * rewritten */
    auto aside = map_aside(ivf);
    try {
        DeadSelector dead(live);
        if (!remove_from_fast_scan(c.get(), dead))
            c->remove_ids(dead);
    } catch (const faiss::FaissException &) {
        return 1;
    }
    if (c->ntotal != live->count)
        return 1; /* a type that kept some dead position: not a compaction */
    if (ivf) {
        /* The lists keep the old positions as ids; each becomes its rank. */
        std::vector<idx_t> rank((size_t)ntotal, -1);
        idx_t next = 0;
        for (idx_t p = 0; p < ntotal; p++)
            if ((live->words[p >> 6] >> (p & 63)) & 1)
                rank[(size_t)p] = next++;
        rewrite_ivf_ids(ivf, [&](idx_t id) { return rank[(size_t)id]; });
        aside.restore();
    }
    out = std::move(c);
    return 0;
}

} // namespace

extern "C" {

int fpx_engine_compact(const fpx_engine *e, const fpx_bitset *live, int any_hnsw, fpx_engine **out,
                       fpx_err *err) {
    std::shared_lock<std::shared_mutex> knobs(e->knobs); /* hnsw.efSearch as set */
    try {
        if (e->bin) {
            std::unique_ptr<BinIndex> b;
            if (compact_copy<BinaryKind>(e->bin.get(), live, b))
                return 1;
            *out = new fpx_engine{nullptr, std::move(b), {}, {}, {}, {}};
            fpx_engine_copy_members(*out, e);
            return 0;
        }
        std::unique_ptr<Index> idx;
        if (compact_copy<FloatKind>(e->index.get(), live, idx)) {
            idx.reset(rebuild_hnsw(e->index.get(), live, any_hnsw));
            if (!idx)
                return 1;
        }
        *out = new fpx_engine{std::move(idx), nullptr, {}, {}, {}, {}};
        fpx_engine_copy_members(*out, e); /* the copy was read back from FAISS's bytes */
        sync_norms(*out);
        return 0;
    }
    FPX_CATCH(err, FPX_E_FAISS)
}

/* Labels of an imported index: NULL when every label is its position. */
static int take_labels(const std::vector<idx_t> &lab, bool identity, int64_t **labels,
                       fpx_err *err) {
    if (identity)
        return 0;
    int64_t *l = (int64_t *)malloc(sizeof(int64_t) * (lab.size() ? lab.size() : 1));
    if (!l)
        return set_err(err, FPX_E_INTERNAL, "out of memory importing an index");
    memcpy(l, lab.data(), sizeof(int64_t) * lab.size());
    *labels = l;
    return 0;
}

/* The positions an imported IVF's entries get, in list order: the ranks of
 * their ids (ties in list order). FAISS's result heaps break equal distances
 * by id, so positions must sort as the ids they replace, or a search of the
 * import would order equal hits differently from FAISS's search of its bytes. */
extern "C++" template <class IVF> std::vector<idx_t> ranks_of_ids(const IVF *ivf) {
    std::vector<std::pair<idx_t, idx_t>> ids; /* (id, list order) */
    for (size_t l = 0; l < ivf->nlist; l++) {
        size_t ls = ivf->invlists->list_size(l);
        for (size_t o = 0; o < ls; o++)
            ids.emplace_back(ivf->invlists->get_single_id(l, o), (idx_t)ids.size());
    }
    std::sort(ids.begin(), ids.end());
    std::vector<idx_t> rank(ids.size());
    for (size_t r = 0; r < ids.size(); r++)
        rank[(size_t)ids[r].second] = (idx_t)r;
    return rank;
}

/* An imported IVF's ids become positions 0..ntotal-1, in the order of the
 * ids (ranks_of_ids), and the ids (through the IDMap's id_map when wrapped)
 * the labels of those positions, in lab. identity is cleared when a label
 * differs from its position. false when an id is not a label. */
extern "C++" template <class IVF>
bool ids_to_positions(IVF *ivf, idx_t ntotal, bool wrapped, const std::vector<idx_t> &id_map,
                      std::vector<idx_t> &lab, bool &identity) {
    idx_t next = 0;
    bool bad = false;
    std::vector<idx_t> rank = ranks_of_ids(ivf);
    rewrite_ivf_ids(ivf, [&](idx_t id) {
        if (next >= ntotal || next >= (idx_t)rank.size())
            return next++;
        idx_t pos = rank[(size_t)next++];
        idx_t l = wrapped ? (id >= 0 && id < ntotal ? id_map[(size_t)id] : -1) : id;
        bad |= l < 0 || pos >= ntotal;
        if (pos < ntotal)
            lab[(size_t)pos] = l;
        identity &= l == pos;
        return pos;
    });
    return !bad && next == ntotal;
}

static int import_binary(const uint8_t *buf, size_t len, fpx_engine **out, int64_t **labels,
                         int *had_idmap, fpx_err *err) {
    try {
        BufReader r(buf, len);
        std::unique_ptr<BinIndex> raw(faiss::read_index_binary(&r));
        std::vector<idx_t> id_map;
        auto m = dynamic_cast<faiss::IndexBinaryIDMap *>(raw.get());
        if (m)
            id_map = m->id_map;
        bool wrapped = m != nullptr;
        int wrapper = dynamic_cast<faiss::IndexBinaryIDMap2 *>(m) ? 2 : wrapped ? 1 : 0;
        std::unique_ptr<BinIndex> b(unwrap_binary_idmap(raw.release()));
        if (check_binary_parts(b.get(), err))
            return -1;
        idx_t ntotal = b->ntotal;
        if (wrapped && (idx_t)id_map.size() != ntotal)
            return set_err(err, FPX_E_VALIDATION, "the IDMap's ids do not match its index");
        std::vector<idx_t> lab((size_t)ntotal);
        bool identity = true, bad = false;
        if (auto ivf = dynamic_cast<faiss::IndexBinaryIVF *>(b.get())) {
            bad |= !ids_to_positions(ivf, ntotal, wrapped, id_map, lab, identity);
        } else {
            for (idx_t p = 0; p < ntotal; p++) {
                lab[(size_t)p] = wrapped ? id_map[(size_t)p] : p;
                bad |= lab[(size_t)p] < 0;
                identity &= lab[(size_t)p] == p;
            }
        }
        if (bad)
            return set_err(err, FPX_E_VALIDATION, "the index holds ids that are not labels");
        if (take_labels(lab, identity, labels, err))
            return -1;
        *had_idmap = wrapper;
        *out = new fpx_engine{nullptr, std::move(b), {}, {}, {}, {}};
        return 0;
    }
    FPX_CATCH(err, FPX_E_VALIDATION)
}

/* An IndexPQ coarse quantizer set to search_type 2 with a code size that is
 * not a multiple of 8 (check_pq_search_type): every assignment of the IVF
 * (its adds, searches and trains) would end the process, and no request can
 * set a quantizer's search_type, so such an index is not imported. */
static int check_quantizer_pq(Index *idx, fpx_err *err) {
    faiss::IndexIVF *ivf = core_ivf(idx);
    if (!ivf || check_pq_search_type(ivf->quantizer, err) == 0)
        return 0;
    return set_err(err, FPX_E_VALIDATION,
                   "the IVF's coarse quantizer is an IndexPQ with search_type 2 "
                   "(ST_generalized_HE) and a code size that is not a multiple of 8 bytes: "
                   "FAISS 1.7.3 asserts on it at every assignment and ends the process");
}

int fpx_engine_import(const uint8_t *buf, size_t len, fpx_engine **out, int64_t **labels,
                      int *had_idmap, fpx_err *err) {
    *labels = nullptr;
    *had_idmap = 0;
    if (len >= 2 && buf[0] == 'I' && buf[1] == 'B') /* binary indexes' fourccs */
        return import_binary(buf, len, out, labels, had_idmap, err);
    try {
        BufReader r(buf, len);
        std::unique_ptr<Index> raw(read_float(&r));
        if (check_parts(raw.get(), true, err))
            return -1;
        std::vector<idx_t> id_map;
        if (auto m2 = dynamic_cast<faiss::IndexIDMap2 *>(raw.get()))
            id_map = m2->id_map;
        else if (auto m = dynamic_cast<faiss::IndexIDMap *>(raw.get()))
            id_map = m->id_map;
        bool wrapped = dynamic_cast<faiss::IndexIDMap *>(raw.get()) != nullptr;
        int wrapper = dynamic_cast<faiss::IndexIDMap2 *>(raw.get()) ? 2 : wrapped ? 1 : 0;
        std::unique_ptr<Index> idx(unwrap_idmap(raw.release()));
        if (check_quantizer_pq(idx.get(), err))
            return -1;
        idx_t ntotal = idx->ntotal;
        if (wrapped && (idx_t)id_map.size() != ntotal)
            return set_err(err, FPX_E_VALIDATION, "the IDMap's ids do not match its index");
        std::vector<idx_t> lab((size_t)ntotal);
        bool identity = true;
        if (faiss::IndexIVF *ivf = core_ivf(idx.get())) {
            /* IVF lists hold the ids: make them positions 0..n-1, keep the ids as labels. */
            if (!ids_to_positions(ivf, ntotal, wrapped, id_map, lab, identity))
                return set_err(err, FPX_E_VALIDATION,
                               "the IVF index holds ids that are not labels");
        } else {
            for (idx_t p = 0; p < ntotal; p++) {
                lab[(size_t)p] = wrapped ? id_map[(size_t)p] : p;
                if (lab[(size_t)p] < 0)
                    return set_err(err, FPX_E_VALIDATION, "the index holds negative ids");
                identity &= lab[(size_t)p] == p;
            }
        }
        if (take_labels(lab, identity, labels, err))
            return -1;
        *had_idmap = wrapper;
        *out = new fpx_engine{std::move(idx), nullptr, {}, {}, {}, {}};
        sync_norms(*out);
        return 0;
    }
    FPX_CATCH(err, FPX_E_VALIDATION)
}

namespace {
struct CallbackWriter : faiss::IOWriter {
    fpx_write_fn fn;
    void *ctx;
    size_t total = 0;
    CallbackWriter(fpx_write_fn f, void *c) : fn(f), ctx(c) {}
    size_t operator()(const void *ptr, size_t size, size_t nitems) override {
        size_t n = size * nitems;
        if (fn && n > 0 && fn(ctx, ptr, n) != 0)
            return 0; /* FAISS throws on a short write */
        total += n;
        return nitems;
    }
};
} // namespace

int fpx_engine_write(const fpx_engine *e, fpx_write_fn fn, void *ctx, size_t *len, fpx_err *err) {
    std::shared_lock<std::shared_mutex> knobs(e->knobs); /* hnsw.efSearch as set */
    try {
        CallbackWriter w(fn, ctx);
        if (e->bin)
            faiss::write_index_binary(e->bin.get(), &w);
        else
            write_float(e->index.get(), &w);
        *len = w.total;
        return 0;
    }
    FPX_CATCH(err, FPX_E_FAISS)
}

/* FAISS's serialization of e into w (throws as FAISS does). */
static void serialize_into(const fpx_engine *e, faiss::VectorIOWriter &w) {
    std::shared_lock<std::shared_mutex> knobs(e->knobs); /* hnsw.efSearch as set */
    if (e->bin)
        faiss::write_index_binary(e->bin.get(), &w);
    else
        write_float(e->index.get(), &w);
}

int fpx_engine_serialize(const fpx_engine *e, uint8_t **buf, size_t *len, fpx_err *err) {
    try {
        faiss::VectorIOWriter w;
        serialize_into(e, w);
        return to_buffer(w, buf, len, err);
    }
    FPX_CATCH(err, FPX_E_FAISS)
}

int fpx_engine_serialize_quantizer(const fpx_engine *e, uint8_t **buf, size_t *len, fpx_err *err) {
    std::shared_lock<std::shared_mutex> knobs(e->knobs); /* a quantizer's efSearch as set */
    try {
        faiss::VectorIOWriter w;
        if (e->bin) {
            auto bivf = dynamic_cast<const faiss::IndexBinaryIVF *>(e->bin.get());
            if (!bivf)
                return set_err(err, FPX_E_VALIDATION, "the index has no IVF quantizer");
            faiss::write_index_binary(bivf->quantizer, &w);
        } else {
            /* the IVF along the main path, as fpx_engine_classes walks it */
            const Index *idx = e->index.get();
            while (idx && !dynamic_cast<const faiss::IndexIVF *>(idx)) {
                if (auto pt = dynamic_cast<const faiss::IndexPreTransform *>(idx))
                    idx = pt->index;
                else if (auto rf = dynamic_cast<const faiss::IndexRefine *>(idx))
                    idx = rf->base_index;
                else
                    idx = nullptr;
            }
            if (!idx)
                return set_err(err, FPX_E_VALIDATION, "the index has no IVF quantizer");
            write_float(static_cast<const faiss::IndexIVF *>(idx)->quantizer, &w);
        }
        return to_buffer(w, buf, len, err);
    }
    FPX_CATCH(err, FPX_E_FAISS)
}

int fpx_engine_deserialize(const uint8_t *buf, size_t len, fpx_engine **out, fpx_err *err) {
    try {
        BufReader r(buf, len);
        if (len >= 2 && buf[0] == 'I' && buf[1] == 'B') {
            std::unique_ptr<BinIndex> b(unwrap_binary_idmap(faiss::read_index_binary(&r)));
            *out = new fpx_engine{nullptr, std::move(b), {}, {}, {}, {}};
            return 0;
        }
        std::unique_ptr<Index> idx(unwrap_idmap(read_float(&r)));
        /* FAISS's reader takes any number as the metric: one of its own only */
        bool known = false;
        for (const auto &t : metric_table)
            known = known || (t.f == idx->metric_type && t.m != FPX_METRIC_HAMMING);
        if (!known)
            return set_err(err, FPX_E_VALIDATION,
                           "the index's metric_type %d is not one of "
                           "FAISS 1.7.3's",
                           (int)idx->metric_type);
        *out = new fpx_engine{std::move(idx), nullptr, {}, {}, {}, {}};
        sync_norms(*out);
        return 0;
    }
    FPX_CATCH(err, FPX_E_VALIDATION)
}

/* FAISS 1.7.3 writes an OPQMatrix as a plain LinearTransform, whose train
 * does nothing: an untrained OPQ read back could never be trained (every
 * train of it failed with "Transformation not trained yet"). The untrained
 * transforms of d that were OPQ matrices in s become them again. */
static void copy_opq(faiss::IndexPreTransform *d, const faiss::IndexPreTransform *s) {
    for (size_t i = 0; i < d->chain.size() && i < s->chain.size(); i++) {
        auto so = dynamic_cast<const faiss::OPQMatrix *>(s->chain[i]);
        faiss::VectorTransform *dt = d->chain[i];
        if (!so || !d->own_fields || dt->is_trained || dynamic_cast<faiss::OPQMatrix *>(dt) ||
            dt->d_in != so->d_in || dt->d_out != so->d_out)
            continue;
        auto o = new faiss::OPQMatrix(*so); /* its settings */
        o->pq = nullptr;                    /* a borrowed quantizer stays with s */
        delete dt;
        d->chain[i] = o;
    }
}

/* The training settings FAISS's serialization leaves out, copied along the
 * main paths of two indexes of the same build: read_index gives an IVF the
 * default ClusteringParameters (25 k-means iterations) where its constructor
 * set 10, and forgets that an IMI or HNSW quantizer trains alone, so an index
 * read back would train differently from the one written. */
static void copy_train_params(Index *d, const Index *s) {
    for (;;) {
        if (auto dp = dynamic_cast<faiss::IndexPreTransform *>(d)) {
            auto sp = dynamic_cast<const faiss::IndexPreTransform *>(s);
            if (!sp)
                return;
            copy_opq(dp, sp);
            d = dp->index, s = sp->index;
        } else if (auto dm = dynamic_cast<faiss::IndexIDMap *>(d)) {
            auto sm = dynamic_cast<const faiss::IndexIDMap *>(s);
            if (!sm)
                return;
            d = dm->index, s = sm->index;
        } else if (auto dr = dynamic_cast<faiss::IndexRefine *>(d)) {
            auto sr = dynamic_cast<const faiss::IndexRefine *>(s);
            if (!sr)
                return;
            d = dr->base_index, s = sr->base_index;
        } else {
            break;
        }
    }
    auto di = dynamic_cast<faiss::IndexIVF *>(d);
    auto si = dynamic_cast<const faiss::IndexIVF *>(s);
    if (di && si) {
        di->cp = si->cp;
        di->quantizer_trains_alone = si->quantizer_trains_alone;
    }
    auto dq = dynamic_cast<faiss::IndexIVFPQ *>(d);
    auto sq = dynamic_cast<const faiss::IndexIVFPQ *>(s);
    if (dq && sq) {
        dq->pq.cp = sq->pq.cp;
        dq->do_polysemous_training = sq->do_polysemous_training;
    }
    auto dpq = dynamic_cast<faiss::IndexPQ *>(d);
    auto spq = dynamic_cast<const faiss::IndexPQ *>(s);
    if (dpq && spq) {
        dpq->pq.cp = spq->pq.cp;
        dpq->do_polysemous_training = spq->do_polysemous_training;
    }
}

void fpx_engine_copy_train_params(fpx_engine *dst, const fpx_engine *src) {
    if (dst->index && src->index) {
        copy_train_params(dst->index.get(), src->index.get());
    } else if (dst->bin && src->bin) {
        auto d = dynamic_cast<faiss::IndexBinaryIVF *>(dst->bin.get());
        auto s = dynamic_cast<const faiss::IndexBinaryIVF *>(src->bin.get());
        if (d && s)
            d->cp = s->cp;
    }
}

int fpx_engine_round_trips(const fpx_engine *e) {
    if (!e->index)
        return 1;
    std::vector<faiss::AdditiveQuantizer *> aqs;
    additive_quantizers(e->index.get(), aqs);
    return aqs.empty();
}

int fpx_engine_copy(const fpx_engine *e, fpx_engine **out, fpx_err *err) {
    faiss::VectorIOWriter w; /* read back from where FAISS wrote it: no copy of the bytes */
    try {
        serialize_into(e, w);
    }
    FPX_CATCH(err, FPX_E_FAISS)
    int rc = fpx_engine_deserialize(w.data.data(), w.data.size(), out, err);
    if (rc == 0)
        fpx_engine_copy_train_params(*out, e);
    return rc;
}

/* FAISS's name of an object's class ("IndexIVFFlat"), as a FAISS user's
 * downcast sees it. */
static std::string class_name(const std::type_info &t) {
    int status = 0;
    char *dm = abi::__cxa_demangle(t.name(), nullptr, nullptr, &status);
    std::string n = dm && status == 0 ? dm : t.name();
    free(dm);
    if (n.rfind("faiss::", 0) == 0)
        n = n.substr(7);
    /* The factory makes an IndexFlat, read_index its L2/IP subclass: one class to FAISS */
    return n == "IndexFlatL2" || n == "IndexFlatIP" ? "IndexFlat" : n;
}

size_t fpx_engine_classes(const fpx_engine *e, char *buf, size_t cap) {
    std::string out;
    if (e->bin) {
        out = class_name(typeid(*e->bin));
    } else {
        for (const Index *idx = e->index.get(); idx;) {
            out += (out.empty() ? "" : ",") + class_name(typeid(*idx));
            if (auto pt = dynamic_cast<const faiss::IndexPreTransform *>(idx))
                idx = pt->index;
            else if (auto rf = dynamic_cast<const faiss::IndexRefine *>(idx))
                idx = rf->base_index;
            else
                idx = nullptr;
        }
    }
    if (cap > 0) {
        size_t n = std::min(out.size(), cap - 1);
        memcpy(buf, out.data(), n);
        buf[n] = 0;
    }
    return out.size();
}

size_t fpx_engine_memory(const fpx_engine *e) {
    if (e->bin)
        return (size_t)e->bin->code_size * (size_t)e->bin->ntotal;
    const Index *idx = e->index.get();
    size_t per = sizeof(float) * (size_t)idx->d;
    if (auto fc = dynamic_cast<const faiss::IndexFlatCodes *>(idx))
        per = fc->code_size;
    else if (auto ivf = dynamic_cast<const faiss::IndexIVF *>(idx))
        per = ivf->code_size + sizeof(idx_t);
    return per * (size_t)idx->ntotal;
}

double fpx_engine_results_factor(const fpx_engine *e) {
    double f = 1;
    for (const Index *idx = e->index.get(); idx;) {
        if (auto pt = dynamic_cast<const faiss::IndexPreTransform *>(idx)) {
            idx = pt->index;
        } else if (auto rf = dynamic_cast<const faiss::IndexRefine *>(idx)) {
            f *= rf->k_factor;
            idx = rf->base_index;
        } else {
            if (auto r = dynamic_cast<const faiss::IndexIVFPQR *>(idx))
                f *= r->k_factor;
            break;
        }
    }
    return f;
}

int fpx_engine_get_param(const fpx_engine *e, const char *name, double *v) {
    if (e->bin) {
        auto bivf = dynamic_cast<const faiss::IndexBinaryIVF *>(e->bin.get());
        auto bh = dynamic_cast<const faiss::IndexBinaryHNSW *>(e->bin.get());
        if (bivf && !strcmp(name, "nprobe"))
            return *v = (double)bivf->nprobe, 0;
        if (bivf && !strcmp(name, "nlist"))
            return *v = (double)bivf->nlist, 0;
        if (bh && !strcmp(name, "efSearch"))
            return *v = bh->hnsw.efSearch, 0;
        if (bh && !strcmp(name, "efConstruction"))
            return *v = bh->hnsw.efConstruction, 0;
        auto hh = dynamic_cast<const faiss::IndexBinaryHash *>(e->bin.get());
        auto mh = dynamic_cast<const faiss::IndexBinaryMultiHash *>(e->bin.get());
        if ((hh || mh) && !strcmp(name, "nflip"))
            return *v = hh ? hh->nflip : mh->nflip, 0;
        return -1;
    }
    Index *idx = e->index.get();
    if (faiss::IndexIVF *ivf = core_ivf(idx)) {
        if (!strcmp(name, "nprobe"))
            return *v = (double)ivf->nprobe, 0;
        if (!strcmp(name, "nlist"))
            return *v = (double)ivf->nlist, 0;
        auto qh = dynamic_cast<const faiss::IndexHNSW *>(ivf->quantizer);
        if (qh && !strcmp(name, "quantizer_efSearch"))
            return *v = qh->hnsw.efSearch, 0;
    }
    if (auto h = dynamic_cast<const faiss::IndexHNSW *>(idx)) {
        std::shared_lock<std::shared_mutex> lk(e->knobs);
        if (!strcmp(name, "efSearch"))
            return *v = h->hnsw.efSearch, 0;
        if (!strcmp(name, "efConstruction"))
            return *v = h->hnsw.efConstruction, 0;
    }
    if (auto pt = dynamic_cast<const faiss::IndexPreTransform *>(idx))
        idx = pt->index;
    if (auto pq = dynamic_cast<const faiss::IndexPQ *>(idx)) {
        std::shared_lock<std::shared_mutex> lk(e->knobs); /* not a search's own values */
        if (!strcmp(name, "search_type"))
            return *v = (double)pq->search_type, 0;
        if (!strcmp(name, "polysemous_ht"))
            return *v = pq->polysemous_ht, 0;
    }
    return -1;
}

int fpx_engine_kmeans(int64_t n, int64_t d, const float *x, int64_t k, int niter, float *centroids,
                      int64_t *assign, float *obj, fpx_err *err) {
    if (n < 1 || d < 1 || k < 1 || niter < 1)
        return set_err(err, FPX_E_VALIDATION, "k-means needs n, d, k and niter >= 1");
    if (n < k)
        return set_err(err, FPX_E_VALIDATION,
                       "k-means needs at least as many vectors (%lld) as "
                       "clusters (%lld)",
                       (long long)n, (long long)k);
    try {
        faiss::ClusteringParameters cp;
        cp.niter = niter;
        cp.verbose = false;
        /* FAISS samples 256 points per centroid by default: keep every point,
         * the caller already chose what to cluster */
        cp.max_points_per_centroid = (int)std::min<int64_t>(INT32_MAX, (n + k - 1) / k);
        faiss::Clustering clus((int)d, (int)k, cp);
        faiss::IndexFlatL2 q((idx_t)d);
        clus.train((idx_t)n, x, q);
        memcpy(centroids, clus.centroids.data(), sizeof(float) * (size_t)(k * d));
        std::vector<float> dist((size_t)n);
        q.search((idx_t)n, x, 1, dist.data(), assign);
        *obj = clus.iteration_stats.empty() ? 0.0f : clus.iteration_stats.back().obj;
        return 0;
    }
    FPX_CATCH(err, FPX_E_FAISS)
}

} // extern "C"
