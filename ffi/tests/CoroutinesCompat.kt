// The binding tests compile against Debian's kotlinx-coroutines 1.0, which
// predates this marker (coroutines 1.5); UniFFI's generated code only opts
// in to it. Apps use a current kotlinx-coroutines and do not need this.
package kotlinx.coroutines

@RequiresOptIn
@Retention(AnnotationRetention.BINARY)
annotation class DelicateCoroutinesApi
