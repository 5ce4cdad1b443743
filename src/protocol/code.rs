//! Request codes, response codes, flag bits and language codes of the RocketMQ remoting
//! protocol (numbers from Apache RocketMQ's `RequestCode`, `ResponseCode` and
//! `LanguageCode`; see `shared/docs/rocketmq-protocol.md` §1-§2).

/// `flag` bit 0: set on responses, clear on requests.
pub const FLAG_RESPONSE: i32 = 1;
/// `flag` bit 1: a oneway request; no response will ever be sent.
pub const FLAG_ONEWAY: i32 = 1 << 1;

/// Request codes the sidecar treats specially. Everything else is relayed untouched.
pub mod request {
    /// SEND_MESSAGE (long header names; Go's normal send). Broker name in `bname`.
    pub const SEND_MESSAGE: i32 = 10;
    /// PULL_MESSAGE: long-polling pull, held up to 15-30 s by the broker.
    pub const PULL_MESSAGE: i32 = 11;
    /// QUERY_CONSUMER_OFFSET: a group's committed offset on one queue (the gates read it
    /// with `setZeroIfNotFound=false`, so a queue without one answers QUERY_NOT_FOUND).
    pub const QUERY_CONSUMER_OFFSET: i32 = 14;
    /// UPDATE_CONSUMER_OFFSET: commits a group's offset on one queue (the gates' seeding).
    pub const UPDATE_CONSUMER_OFFSET: i32 = 15;
    /// GET_MAX_OFFSET: a queue's end offset (the credential check reads one).
    pub const GET_MAX_OFFSET: i32 = 30;
    /// HEART_BEAT: client registration with a broker, every 30 s.
    pub const HEART_BEAT: i32 = 34;
    /// UNREGISTER_CLIENT: header clientID, producerGroup, consumerGroup. The sidecar sends
    /// it when a role leaves a cluster, so the broker drops the connection from the group.
    pub const UNREGISTER_CLIENT: i32 = 35;
    /// GET_CONSUMER_LIST_BY_GROUP: the rebalance's member list; the Java client sends it to
    /// a random broker of the topic's route.
    pub const GET_CONSUMER_LIST_BY_GROUP: i32 = 38;
    /// CHECK_TRANSACTION_STATE: broker -> client.
    pub const CHECK_TRANSACTION_STATE: i32 = 39;
    /// NOTIFY_CONSUMER_IDS_CHANGED: broker -> client, oneway.
    pub const NOTIFY_CONSUMER_IDS_CHANGED: i32 = 40;
    /// LOCK_BATCH_MQ: body lists message queues, each with a broker name.
    pub const LOCK_BATCH_MQ: i32 = 41;
    /// UNLOCK_BATCH_MQ: body lists message queues, each with a broker name.
    pub const UNLOCK_BATCH_MQ: i32 = 42;
    /// GET_ROUTEINFO_BY_TOPIC: the route query every producer and consumer makes.
    pub const GET_ROUTEINFO_BY_TOPIC: i32 = 105;
    /// GET_BROKER_CLUSTER_INFO: admin tools' view of every broker.
    pub const GET_BROKER_CLUSTER_INFO: i32 = 106;
    /// GET_CONSUME_STATS: body keyed by message queues (broker names inside).
    pub const GET_CONSUME_STATS: i32 = 208;
    /// GET_CONSUMER_CONNECTION_LIST: who is online in a group, and what it subscribes to.
    pub const GET_CONSUMER_CONNECTION_LIST: i32 = 203;
    /// QUERY_TOPIC_CONSUME_BY_WHO: the groups online for a topic or with offsets on it.
    pub const QUERY_TOPIC_CONSUME_BY_WHO: i32 = 300;
    /// GET_TOPIC_STATS_INFO: body keyed by message queues (broker names inside).
    pub const GET_TOPIC_STATS_INFO: i32 = 202;
    /// RESET_CONSUMER_CLIENT_OFFSET: broker -> client; body keyed by message queues.
    pub const RESET_CONSUMER_CLIENT_OFFSET: i32 = 220;
    /// GET_SYSTEM_TOPIC_LIST_FROM_NS: body carries one broker address.
    pub const GET_SYSTEM_TOPIC_LIST_FROM_NS: i32 = 304;
    /// GET_CONSUMER_RUNNING_INFO: broker -> client.
    pub const GET_CONSUMER_RUNNING_INFO: i32 = 307;
    /// CONSUME_MESSAGE_DIRECTLY: broker -> client; header carries `brokerName`.
    pub const CONSUME_MESSAGE_DIRECTLY: i32 = 309;
    /// SEND_MESSAGE_V2: default Java send, one-letter header keys; broker name in `n`.
    pub const SEND_MESSAGE_V2: i32 = 310;
    /// SEND_BATCH_MESSAGE: V2 header; broker name in `n`.
    pub const SEND_BATCH_MESSAGE: i32 = 320;
    /// SEND_REPLY_MESSAGE: long header names, like SEND_MESSAGE.
    pub const SEND_REPLY_MESSAGE: i32 = 324;
    /// SEND_REPLY_MESSAGE_V2: V2 header; broker name in `n`.
    pub const SEND_REPLY_MESSAGE_V2: i32 = 325;
    /// LITE_PULL_MESSAGE: the lite pull consumer's pull; answered like PULL_MESSAGE.
    pub const LITE_PULL_MESSAGE: i32 = 361;
    /// QUERY_ASSIGNMENT (5.x pop rebalance): response lists message queues.
    pub const QUERY_ASSIGNMENT: i32 = 400;
}

/// `sysFlag` bits of a sent message (`MessageSysFlag`).
pub mod sysflag {
    /// The first half of a transactional message: the broker keeps it until the producer
    /// commits or rolls back, asking the producer's group (CHECK_TRANSACTION_STATE) meanwhile.
    pub const TRANSACTION_PREPARED: i32 = 1 << 2;
}

/// Response codes the sidecar produces or inspects.
pub mod response {
    /// SUCCESS.
    pub const SUCCESS: i32 = 0;
    /// SYSTEM_ERROR: what the sidecar answers when it cannot reach a name server.
    pub const SYSTEM_ERROR: i32 = 1;
    /// SYSTEM_BUSY: a server's thread pool is full ("[OVERLOAD]"); the sidecar answers it
    /// when too many name-server requests are in flight.
    pub const SYSTEM_BUSY: i32 = 2;
    /// TOPIC_NOT_EXIST.
    pub const TOPIC_NOT_EXIST: i32 = 17;
    /// QUERY_NOT_FOUND: no offset stored for the group on that queue.
    pub const QUERY_NOT_FOUND: i32 = 22;
    /// SUBSCRIPTION_GROUP_NOT_EXIST: the group is not created on the broker (5.x refuses
    /// offset commits for it).
    pub const SUBSCRIPTION_GROUP_NOT_EXIST: i32 = 26;
    /// CONSUMER_NOT_ONLINE: no member of the group is connected to that broker.
    pub const CONSUMER_NOT_ONLINE: i32 = 206;
}

/// Short, stable name of a request code, for logs (and metric labels later).
pub fn request_name(code: i32) -> &'static str {
    match code {
        10 => "SEND_MESSAGE",
        11 => "PULL_MESSAGE",
        12 => "QUERY_MESSAGE",
        14 => "QUERY_CONSUMER_OFFSET",
        15 => "UPDATE_CONSUMER_OFFSET",
        17 => "UPDATE_AND_CREATE_TOPIC",
        29 => "SEARCH_OFFSET_BY_TIMESTAMP",
        30 => "GET_MAX_OFFSET",
        31 => "GET_MIN_OFFSET",
        33 => "VIEW_MESSAGE_BY_ID",
        34 => "HEART_BEAT",
        35 => "UNREGISTER_CLIENT",
        36 => "CONSUMER_SEND_MSG_BACK",
        37 => "END_TRANSACTION",
        38 => "GET_CONSUMER_LIST_BY_GROUP",
        39 => "CHECK_TRANSACTION_STATE",
        40 => "NOTIFY_CONSUMER_IDS_CHANGED",
        41 => "LOCK_BATCH_MQ",
        42 => "UNLOCK_BATCH_MQ",
        46 => "CHECK_CLIENT_CONFIG",
        105 => "GET_ROUTEINFO_BY_TOPIC",
        106 => "GET_BROKER_CLUSTER_INFO",
        202 => "GET_TOPIC_STATS_INFO",
        203 => "GET_CONSUMER_CONNECTION_LIST",
        208 => "GET_CONSUME_STATS",
        220 => "RESET_CONSUMER_CLIENT_OFFSET",
        300 => "QUERY_TOPIC_CONSUME_BY_WHO",
        221 => "GET_CONSUMER_STATUS_FROM_CLIENT",
        304 => "GET_SYSTEM_TOPIC_LIST_FROM_NS",
        307 => "GET_CONSUMER_RUNNING_INFO",
        309 => "CONSUME_MESSAGE_DIRECTLY",
        310 => "SEND_MESSAGE_V2",
        320 => "SEND_BATCH_MESSAGE",
        324 => "SEND_REPLY_MESSAGE",
        325 => "SEND_REPLY_MESSAGE_V2",
        326 => "PUSH_REPLY_MESSAGE_TO_CLIENT",
        361 => "LITE_PULL_MESSAGE",
        400 => "QUERY_ASSIGNMENT",
        401 => "SET_MESSAGE_REQUEST_MODE",
        _ => "OTHER",
    }
}

/// LanguageCode byte of the ROCKETMQ binary header, mapped to the enum name Java's JSON
/// header carries. Unknown bytes map to "OTHER", which every server accepts.
pub fn language_name(byte: u8) -> &'static str {
    match byte {
        0 => "JAVA",
        1 => "CPP",
        2 => "DOTNET",
        3 => "PYTHON",
        4 => "DELPHI",
        5 => "ERLANG",
        6 => "RUBY",
        7 => "OTHER",
        8 => "HTTP",
        9 => "GO",
        10 => "PHP",
        11 => "OMS",
        12 => "RUST",
        13 => "NODE_JS",
        _ => "OTHER",
    }
}
