/*
 * Runs Apache RocketMQ's mqadmin (org.apache.rocketmq.tools.command.MQAdminStartup) and exits as
 * soon as the sub-command has returned.
 *
 * Why: MQAdminStartup.main returns promptly, but the admin client's Netty event loops then shut
 * down "gracefully" (2 s quiet period, longer on 5.x), so every plain mqadmin call costs 3-6 s of
 * wall time. The harness polls the brokers (lag, offsets), so it runs mqadmin through this class.
 *
 * It is found by reflection, so this file compiles with plain `javac` and no class path and works
 * with every RocketMQ version on the class path given at run time (4.9.x and 5.x both have
 * `public static void main0(String[] args, RPCHook rpcHook)`).
 *
 * A second stall: 5.x sub-commands call DefaultMQAdminExt.shutdown() in a finally block after
 * printing their result, and that shutdown sometimes waits ~3 s joining a client service thread.
 * A watchdog halts the JVM when the main thread has been inside that shutdown for 300 ms (the
 * output is complete by then; only an exception trace printed after shutdown could be lost).
 *
 * Exit code: 0 when the sub-command returned (or stalled in shutdown), 1 when it threw.
 */
public final class AdminRunner {
    private AdminRunner() {
    }

    public static void main(String[] args) throws Exception {
        Class<?> startup = Class.forName("org.apache.rocketmq.tools.command.MQAdminStartup");
        java.lang.reflect.Method main0 = null;
        for (java.lang.reflect.Method m : startup.getMethods()) {
            if (m.getName().equals("main0") && m.getParameterCount() == 2) {
                main0 = m;
            }
        }
        Thread main = Thread.currentThread();
        Thread watchdog = new Thread(() -> {
            long since = 0;
            while (true) {
                boolean inShutdown = false;
                for (StackTraceElement f : main.getStackTrace()) {
                    if (f.getClassName().equals("org.apache.rocketmq.tools.admin.DefaultMQAdminExt")
                            && f.getMethodName().equals("shutdown")) {
                        inShutdown = true;
                        break;
                    }
                }
                long now = System.nanoTime();
                if (!inShutdown) {
                    since = 0;
                } else if (since == 0) {
                    since = now;
                } else if (now - since > 300_000_000L) {
                    System.out.flush();
                    System.err.println("AdminRunner: admin client shutdown stalled; halting");
                    System.err.flush();
                    Runtime.getRuntime().halt(0);
                }
                try {
                    Thread.sleep(50);
                } catch (InterruptedException e) {
                    return;
                }
            }
        }, "admin-runner-watchdog");
        watchdog.setDaemon(true);
        watchdog.start();
        int rc = 0;
        try {
            if (main0 != null) {
                main0.invoke(null, args, null);
            } else {
                startup.getMethod("main", String[].class).invoke(null, (Object) args);
            }
        } catch (java.lang.reflect.InvocationTargetException e) {
            e.getCause().printStackTrace();
            rc = 1;
        }
        System.out.flush();
        System.err.flush();
        Runtime.getRuntime().halt(rc);
    }
}
